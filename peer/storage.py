"""A peer's durable state in SQLite (WAL mode): term, acked leader, incarnation.

One database file per peer under `data_dir/node-<id>/`. Every write is committed with
`synchronous=FULL` before the call returns, so the driver may send what depends on it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from election import HardState

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER)
"""


class Storage:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "state.sqlite3"
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(SCHEMA)

    def _get(self, key: str) -> int | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def load_hard_state(self) -> HardState:
        return HardState(self._get("term") or 0, self._get("voted_for"))

    def save_hard_state(self, state: HardState) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [("term", state.term), ("voted_for", state.voted_for)],
            )

    def next_incarnation(self) -> int:
        """A number higher than any earlier run of this peer used."""
        incarnation = (self._get("incarnation") or 0) + 1
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('incarnation', ?)",
                (incarnation,),
            )
        return incarnation

    def close(self) -> None:
        self.db.close()
