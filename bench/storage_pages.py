"""What a peer's small durable write costs by SQLite page size, several peers at once.

    python bench/storage_pages.py [--writers 3] [--writes 500] [--pages 1024,4096]

Each writer is a process with its own `Storage` (peer/runtime/storage.py) in its own
temporary directory; they wait on one barrier before each write, so their fsyncs meet
on the disk the way a leader's and two followers' do for one commit. A write is one
small entry and the commit index, as a follower's is under one client. Prints, per
page size, the median time of a write for each writer and the WAL bytes a write adds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peer.protocol.log import Entry  # noqa: E402
from peer.runtime import storage  # noqa: E402

COMMAND = '{"op":"submit","at":1.0,"tasks":[{"kind":"echo","args":1}],"rid":"' + "a" * 32 + '"}'


def _writer(barrier: Any, results: Any, writes: int, page_size: int) -> None:
    storage.PAGE_SIZE = page_size
    with tempfile.TemporaryDirectory() as tmp:
        store = storage.Storage(Path(tmp))
        assert store.db.execute("PRAGMA page_size").fetchone()[0] == page_size
        took = []
        for index in range(1, writes + 1):
            barrier.wait()
            started = time.perf_counter()
            store.save(None, index, [Entry(1, index, COMMAND)], index - 1)
            took.append(time.perf_counter() - started)
        wal = os.path.getsize(str(store.path) + "-wal")
        store.db.close()
    results.put((statistics.median(took) * 1e3, wal // writes))


def measure(writers: int, writes: int, page_size: int) -> dict[str, Any]:
    barrier, results = mp.Barrier(writers), mp.Queue()
    procs = [
        mp.Process(target=_writer, args=(barrier, results, writes, page_size))
        for _ in range(writers)
    ]
    for proc in procs:
        proc.start()
    found = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    return {
        "page_size": page_size,
        "writers": writers,
        "write_p50_ms": sorted(round(ms, 3) for ms, _ in found),
        "wal_bytes_per_write": found[0][1],
        "sqlite": sqlite3.sqlite_version,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=3)
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--pages", default="1024,4096")
    args = parser.parse_args()
    for page_size in (int(p) for p in args.pages.split(",")):
        print(json.dumps(measure(args.writers, min(args.writes, 10_000), page_size)))


if __name__ == "__main__":
    main()
