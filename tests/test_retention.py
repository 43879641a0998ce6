"""Ring 1 for retention: the table trims and forgets exactly what the log says, keys
of forgotten tasks keep deduplicating until the log lets them go, and the leader's
planner picks what is due (by age, by the per-queue cap) and never proposes a task
twice while its entry is in flight."""

from __future__ import annotations

from typing import Any

from peer.protocol.commands import Forget, Trim, decode_command, encode_command
from peer.protocol.records import Applied
from peer.protocol.retention import Retention
from peer.protocol.settings import Settings
from peer.protocol.tasks import TaskTable
from tests.test_task_table import Table, check_consistent


def finished_table(count: int, queue: str = "default", at: float = 2.0) -> Table:
    """`count` echo tasks (keys k1..kN), each run and succeeded at `at`."""
    t = Table()
    for i in range(1, count + 1):
        t.submit({"kind": "echo", "args": {"n": i}, "key": f"k{i}", "queue": queue}, rid=f"r{i}")
        t.assign((i, 1, 7, 1))
        t.finish((i, 1, True, {"n": i}, 0.0), at=at)
    return t


def apply(t: Table, command: Any) -> Applied:
    applied = t.table.apply(t.next_index(), encode_command(command))
    check_consistent(t.table)
    return applied


def test_trim_and_forget_round_trip_through_their_text() -> None:
    for command in (Trim(5.0, (1, 2)), Forget(6.0, (3,), keys_before=1.5)):
        assert decode_command(encode_command(command)) == command


def test_a_trimmed_task_keeps_its_state_but_not_its_data_and_cannot_be_retried() -> None:
    t = finished_table(2)
    t.cancel(2)  # (already succeeded: nothing changes)
    assert apply(t, Trim(10.0, (1, 99))).task_ids == (1,)
    task = t.table.tasks[1]
    assert task.state == "succeeded" and task.trimmed
    assert task.args is None and task.result is None and task.attempts == ()
    assert t.table.tasks[2].result == {"n": 2}
    assert apply(t, Trim(11.0, (1,))).task_ids == ()  # once
    assert t.table.retry_blocker(task) is not None


def test_only_finished_tasks_are_trimmed_or_forgotten() -> None:
    t = Table()
    t.submit({"kind": "echo"})
    assert apply(t, Trim(1.0, (1,))).task_ids == ()
    assert apply(t, Forget(1.0, (1,), 0.0)).task_ids == ()
    assert t.table.tasks[1].state == "queued"


def test_a_forgotten_task_leaves_the_table_and_its_key_still_answers() -> None:
    t = finished_table(3)
    applied = apply(t, Forget(10.0, (1, 2), keys_before=0.0))
    assert applied.task_ids == (1, 2) and set(t.table.tasks) == {3}
    assert t.table.forgotten == 2 and t.table.counts["succeeded"] == 1
    again = t.submit({"kind": "echo", "key": "k1"})
    assert again.task_ids == (1,) and again.created == (False,)  # deduplicated, not re-run
    assert t.table.key_holder("k1") == 1 and t.table.key_holder("k9") is None
    tasks, cursor = t.table.list(None, None, 10, 0)
    assert [x.id for x in tasks] == [3] and cursor is None
    assert t.table.low_id == 3


def test_keys_and_request_ids_go_when_the_log_says_so() -> None:
    t = finished_table(2)
    apply(t, Forget(10.0, (1,), keys_before=0.0))
    assert "k1" in t.table.forgotten_keys and "r1" in t.table.by_rid
    apply(t, Forget(20.0, (), keys_before=15.0))  # forgotten at 10: let go
    assert "k1" not in t.table.forgotten_keys and "r1" not in t.table.by_rid
    assert "r2" not in t.table.by_rid  # submitted at 0.0, before 15
    assert "k2" in t.table.by_key  # still held: keys of held tasks never go
    fresh = t.submit({"kind": "echo", "key": "k1"})
    assert fresh.created == (True,) and fresh.task_ids == (3,)


def test_forgetting_a_dependent_unlinks_it_from_its_parent() -> None:
    t = Table()
    t.submit({"kind": "echo"})
    t.submit({"kind": "echo", "depends_on": [1]})
    t.cancel(2)
    assert t.table.tasks[1].dependents == [2]
    apply(t, Forget(5.0, (2,), keys_before=0.0))
    assert t.table.tasks[1].dependents == []
    t.assign((1, 1, 7, 1))
    t.finish((1, 1, True, None, 0.0))  # releasing dependents touches no forgotten task
    assert t.table.tasks[1].state == "succeeded"


def test_two_tables_applying_the_same_entries_forget_the_same_tasks() -> None:
    one, two = finished_table(5), finished_table(5)
    for t in (one, two):
        apply(t, Trim(10.0, (1, 2, 3)))
        apply(t, Forget(12.0, (1, 4), keys_before=0.0))
    assert {i: x.to_json() for i, x in one.table.tasks.items()} == {
        i: x.to_json() for i, x in two.table.tasks.items()
    }


# ------------------------------------------------------------------ the planner


def retention(**settings: Any) -> Retention:
    return Retention(Settings(**settings))


def test_without_settings_nothing_is_ever_planned() -> None:
    assert retention().plan(1e9, finished_table(3).table) == []


def test_finished_tasks_are_trimmed_after_keep_finished_then_forgotten() -> None:
    t = finished_table(3, at=2.0)
    plan = retention(keep_finished=10.0, keep_keys=100.0)
    assert plan.plan(11.0, t.table) == []  # ended at 2: not yet 10 s ago
    [trim] = plan.plan(12.0, t.table)
    assert trim == Trim(12.0, (1, 2, 3))
    assert plan.plan(13.0, t.table) == []  # in flight: not proposed again
    applied = apply(t, trim)
    plan.applied([applied])
    assert plan.plan(21.0, t.table) == []  # trimmed at 12: kept trimmed 10 s more
    [forget] = plan.plan(22.0, t.table)
    assert forget == Forget(22.0, (1, 2, 3), keys_before=22.0 - 100.0)


def test_a_queue_over_its_cap_forgets_its_oldest_at_once() -> None:
    t = finished_table(5, queue="q")
    [forget] = retention(max_finished=2).plan(3.0, t.table)
    assert isinstance(forget, Forget) and forget.tasks == (1, 2, 3)
    apply(t, forget)
    assert set(t.table.tasks) == {4, 5}


def test_the_cap_counts_trimmed_tasks_too_and_takes_them_first() -> None:
    t = finished_table(4)
    apply(t, Trim(5.0, (3,)))
    [forget] = retention(max_finished=2).plan(6.0, t.table)
    assert isinstance(forget, Forget) and forget.tasks == (3, 1)


def test_a_retried_task_leaves_the_finished_order() -> None:
    t = Table()
    t.submit({"kind": "fail", "max_attempts": 1})
    t.assign((1, 1, 7, 1))
    t.finish((1, 1, False, "boom", 0.0), at=2.0)
    assert list(t.table.finished["default"]) == [1]
    t.apply({"op": "retry", "at": 3.0, "ids": [1]})
    assert list(t.table.finished["default"]) == []
    assert retention(keep_finished=1.0).plan(100.0, t.table) == []


def test_one_entry_holds_at_most_max_forget_tasks() -> None:
    table: TaskTable = finished_table(30).table
    [trim] = retention(keep_finished=1.0, max_forget=8).plan(100.0, table)
    assert isinstance(trim, Trim) and len(trim.tasks) == 8
