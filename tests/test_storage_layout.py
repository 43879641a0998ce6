"""A peer's database reads the same whichever layout its `meta` table has: one made
before `meta` became a single B-tree (a rowid table with a text key) still loads its
term, vote, log and commit index, and takes new writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from election import HardState
from peer.protocol.log import Entry
from peer.runtime.storage import Storage

OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER);
CREATE TABLE log (idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, command TEXT NOT NULL);
"""


def _entries(first: int, count: int, term: int = 2) -> list[Entry]:
    return [Entry(term, i, f'{{"n":{i}}}') for i in range(first, first + count)]


def test_a_database_with_the_old_meta_table_loads_and_takes_writes(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    db.executescript(OLD_SCHEMA)
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("term", 2), ("voted_for", 3)])
    db.execute("INSERT INTO meta VALUES ('commit_index', 2)")
    db.executemany("INSERT INTO log VALUES (?, ?, ?)", [(i, 2, f'{{"n":{i}}}') for i in (1, 2)])
    db.commit()
    db.close()

    storage = Storage(tmp_path)
    assert storage.load_hard_state() == HardState(2, 3)
    log, commit = storage.load_log()
    assert (log.last_index, commit) == (2, 2)
    storage.save(HardState(3, 5), 3, _entries(3, 2, term=3), 4)
    storage.db.close()

    reopened = Storage(tmp_path)
    assert reopened.load_hard_state() == HardState(3, 5)
    log, commit = reopened.load_log()
    assert (log.last_index, commit) == (4, 4)


def test_a_new_database_keeps_meta_in_one_tree(tmp_path: Path) -> None:
    storage = Storage(tmp_path)
    storage.save(HardState(1, 1), 1, _entries(1, 3), 3)
    (sql,) = storage.db.execute("SELECT sql FROM sqlite_master WHERE name = 'meta'").fetchone()
    assert "WITHOUT ROWID" in sql
    indexes = storage.db.execute(
        "SELECT name FROM sqlite_master WHERE tbl_name = 'meta' AND type = 'index'"
    )
    assert indexes.fetchall() == []
    assert storage.load_hard_state() == HardState(1, 1)
    log, commit = storage.load_log()
    assert (log.last_index, commit) == (3, 3)
