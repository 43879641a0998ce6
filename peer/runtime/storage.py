"""A peer's durable state in SQLite (WAL mode): term, acked leader, incarnation, the
log, the commit index, and the latest snapshot with the log's base (the entries up to
the base are compacted: deleted in the transaction that stores the snapshot).

One database file per peer under `data_dir/node-<id>/`. `save` writes one ready batch
in one transaction, committed with `synchronous=FULL` before it returns, so the driver
may then send what depends on it. Writes are batched per round, never per entry.

The peer holds its database in SQLite's exclusive locking mode: no file locks taken and
dropped around every transaction (six `fcntl` calls a write), no shared-memory index,
and a second process opened on the same directory (a peer started twice) is refused
with `StorageBusy` instead of writing beside the first.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from election import HardState
from peer.protocol.log import Entry, Log
from peer.protocol.snapshot import Snapshot, SnapshotWrite

# `meta` is one B-tree (WITHOUT ROWID): a rowid table with a text key is two (the rows and
# the key's index), and the commit index changes in nearly every write, so each write
# put one more page in the WAL (about 14 KB of WAL per write of six entries, now about
# 10 KB). A database made before keeps its two-tree table; both read the same.
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL,
                                command TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (id INTEGER PRIMARY KEY CHECK (id = 1),
                                     idx INTEGER NOT NULL, term INTEGER NOT NULL,
                                     data TEXT NOT NULL);
"""


PAGE_SIZE = 1024  # bytes: the page size of a new database (see Storage.__init__)


class StorageBusy(RuntimeError):
    """Another process holds this peer's database."""


class Storage:
    def __init__(self, directory: Path, wait: float = 5.0) -> None:
        """`wait`: seconds to wait for a process that still holds the database (one
        that is exiting) before `StorageBusy`."""
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "state.sqlite3"
        # used by one thread at a time: the driver's disk thread, or the driver at start
        self.db = sqlite3.connect(
            self.path, timeout=wait, isolation_level=None, check_same_thread=False
        )
        try:
            # a new database's pages: 1 KB (SQLite's default is 4 KB). A write of a few
            # small entries changes two or three pages, each written whole to the WAL: 2 KB
            # a write, not 8, and while three peers fsync at once on one disk a small write
            # takes about 0.34 ms, not 0.40 (bench/storage_pages.py); big entries and
            # snapshots span more overflow pages, written off the loop. (A database made
            # before keeps its page size: this pragma does nothing once it has tables.)
            self.db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")  # (before WAL is first used)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA journal_size_limit=8388608")  # a checkpointed WAL shrinks
            self.db.executescript(SCHEMA)
            self.fresh = self._get("incarnation") is None  # nothing was ever stored here
            self.db.execute("BEGIN IMMEDIATE")  # the write lock, held from now on
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self.db.close()
            if "locked" not in str(exc):
                raise
            raise StorageBusy(
                f"{self.path} is held by another process: is this peer already running "
                "with the same data directory?"
            ) from None

    def _get(self, key: str) -> int | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def load_hard_state(self) -> HardState:
        return HardState(self._get("term") or 0, self._get("voted_for"))

    def save_hard_state(self, state: HardState) -> None:
        self.save(state, None, [], None)

    def save(
        self,
        state: HardState | None,
        entries_from: int | None,
        entries: Sequence[Entry],
        commit_index: int | None,
        snapshot: SnapshotWrite | None = None,
    ) -> None:
        """One batch, atomically: hard state, a snapshot (the log compacted to its
        base), the log rewritten from `entries_from`, the commit index."""
        meta: list[tuple[str, int | None]] = []
        if state is not None:
            meta += [("term", state.term), ("voted_for", state.voted_for)]
        if commit_index is not None:
            meta.append(("commit_index", commit_index))
        if snapshot is not None:
            meta += [("log_base", snapshot.base_index), ("log_base_term", snapshot.base_term)]
        try:
            with self.db:
                self.db.execute("BEGIN")
                if meta:
                    self.db.executemany(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta
                    )
                if snapshot is not None:
                    taken = snapshot.snapshot
                    self.db.execute(
                        "INSERT OR REPLACE INTO snapshot (id, idx, term, data) VALUES (1, ?, ?, ?)",
                        (taken.index, taken.term, taken.data),
                    )
                    self.db.execute("DELETE FROM log WHERE idx <= ?", (snapshot.base_index,))
                if entries_from is not None:
                    self.db.execute("DELETE FROM log WHERE idx >= ?", (entries_from,))
                    self.db.executemany(
                        "INSERT INTO log (idx, term, command) VALUES (?, ?, ?)",
                        [(e.index, e.term, e.command) for e in entries],
                    )
        except sqlite3.Error:
            self._end_failed_transaction()
            raise

    def _end_failed_transaction(self) -> None:
        """A refused write (a full disk) may leave its transaction open when the COMMIT
        itself failed; roll it back so that the retry starts a clean one."""
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # (then SQLite rolled it back itself)
                self.db.rollback()

    def load_log(self) -> tuple[Log, int]:
        """The log (every entry after its base, in order), and the last commit index
        written."""
        rows = self.db.execute("SELECT term, idx, command FROM log ORDER BY idx").fetchall()
        entries = [Entry(term, idx, command) for term, idx, command in rows]
        base = self._get("log_base") or 0
        for position, entry in enumerate(entries, start=base + 1):
            if entry.index != position:
                raise RuntimeError(f"{self.path}: log has a gap before index {entry.index}")
        log = Log(entries, base, self._get("log_base_term") or 0)
        return log, self._get("commit_index") or 0

    def load_snapshot(self) -> Snapshot | None:
        row = self.db.execute("SELECT idx, term, data FROM snapshot WHERE id = 1").fetchone()
        return None if row is None else Snapshot(row[0], row[1], row[2])

    def next_incarnation(self, at_least: int = 0) -> int:
        """A number higher than any earlier run of this peer used, and at least
        `at_least` (the driver passes the wall clock in milliseconds, so that a peer
        whose disk was wiped still comes back with a higher incarnation than before)."""
        incarnation = max((self._get("incarnation") or 0) + 1, at_least)
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('incarnation', ?)",
                (incarnation,),
            )
        return incarnation

    def close(self) -> None:
        self.db.close()
