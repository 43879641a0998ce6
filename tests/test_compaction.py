"""Ring 1 for when snapshots are due (`Compaction.due`): at the multiples of the steps
for a small table, the steps doubled as the table grows (a step of log text holds at
least `snapshot_task_chars` per task), and fixed when that is 0; cluster.toml sets it."""

from __future__ import annotations

import tomllib

import pytest

from peer.config import ConfigError, parse_config
from peer.protocol.compaction import Compaction
from peer.protocol.log import Entry
from peer.protocol.settings import Settings


def due_at(compaction: Compaction, chars: int, entries: int, tasks: int) -> list[int]:
    """The indexes, of `entries` entries of `chars` characters each applied to a table
    of `tasks` tasks, that call for a snapshot."""
    found = []
    for index in range(1, entries + 1):
        before, after = (index - 1) * chars, index * chars
        if compaction.due(Entry(1, index, "x" * chars), before, after, tasks):
            found.append(index)
    return found


def test_a_small_table_snapshots_at_each_multiple_of_the_steps() -> None:
    compaction = Compaction(Settings(snapshot_every=7, snapshot_bytes=1000))
    assert due_at(compaction, 100, 30, tasks=5) == [7, 10, 14, 20, 21, 28, 30]


def test_the_steps_double_as_the_table_grows_so_a_snapshot_costs_little_per_character() -> None:
    settings = Settings(snapshot_every=0, snapshot_bytes=1000, snapshot_task_chars=10)
    compaction = Compaction(settings)
    scales = [compaction.scale(n) for n in (0, 100, 101, 200, 201, 800, 801)]
    assert scales == [1, 1, 2, 2, 4, 8, 16]
    assert due_at(compaction, 100, 80, tasks=100) == [10, 20, 30, 40, 50, 60, 70, 80]
    assert due_at(compaction, 100, 80, tasks=350) == [40, 80]  # steps of 4000 characters
    for tasks in (1, 100, 350, 5000):  # every step at least holds 10 characters a task
        step = 1000 * compaction.scale(tasks)
        assert step >= 10 * tasks and (step == 1000 or step < 20 * tasks)


def test_with_no_step_of_text_the_step_of_entries_doubles_against_the_default_text_step() -> None:
    settings = Settings(snapshot_every=5, snapshot_bytes=0, snapshot_task_chars=10)
    compaction = Compaction(settings)
    default = Settings().snapshot_bytes
    assert due_at(compaction, 1, 20, tasks=default // 10) == [5, 10, 15, 20]
    assert due_at(compaction, 1, 40, tasks=3 * default // 10) == [20, 40]


def test_fixed_steps_when_the_table_does_not_count() -> None:
    settings = Settings(snapshot_every=0, snapshot_bytes=1000, snapshot_task_chars=0)
    assert due_at(Compaction(settings), 100, 30, tasks=10**6) == [10, 20, 30]


def test_cluster_toml_sets_the_characters_per_task_and_refuses_a_negative_count() -> None:
    nodes = '[[node]]\nid = 1\nhost = "127.0.0.1"\nport = 7001\n'
    config = parse_config(tomllib.loads("[cluster]\nsnapshot_task_chars = 0\n" + nodes))
    assert config.settings().snapshot_task_chars == 0
    assert parse_config(tomllib.loads(nodes)).settings().snapshot_task_chars == 64
    with pytest.raises(ConfigError, match="snapshot_task_chars"):
        parse_config(tomllib.loads("[cluster]\nsnapshot_task_chars = -1\n" + nodes))
