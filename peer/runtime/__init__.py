"""The shell around the pure core: the driver, SQLite storage, the peer transport and
wire codec, the HTTP API and the task worker. All I/O lives here and in `peer.ops`.
"""
