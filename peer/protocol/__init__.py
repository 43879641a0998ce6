"""The pure core of one peer: membership, replication, the task table, scheduling and
dispatch, and the typed messages and commands they exchange.

Nothing here touches a socket, asyncio, a clock, global randomness, threads or SQLite;
the lint refuses those imports (see pyproject.toml). Inputs come in with `now` passed
in, outputs go out as one batch for the driver in `peer.runtime` to carry out.
"""
