"""Ring 1 for the task state machine: `TaskTable.apply` of submit, cancel, assign and
finish commands, each test named after the rule it checks. Every command goes in as the
JSON text a log entry would carry; after every apply the per-state counts and the
running index must agree with the tasks themselves.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import orjson
import pytest

from peer.protocol.commands import Drain, Retry, Submit, TaskSpec
from peer.protocol.records import STATES, TERMINAL, Applied
from peer.protocol.tasks import TaskTable


class Table:
    """A `TaskTable` fed one JSON command at a time, checked after each one."""

    def __init__(self) -> None:
        self.table = TaskTable()
        self.index = 0

    def next_index(self) -> int:
        self.index += 1
        return self.index

    def apply(self, command: dict[str, Any] | str) -> Applied:
        self.index += 1
        text = command if isinstance(command, str) else orjson.dumps(command).decode()
        applied = self.table.apply(self.index, text)
        check_consistent(self.table)
        return applied

    def submit(self, *specs: dict[str, Any], at: float = 0.0, rid: str | None = None) -> Applied:
        command: dict[str, Any] = {"op": "submit", "at": at, "tasks": list(specs)}
        if rid is not None:
            command["rid"] = rid
        return self.apply(command)

    def assign(self, *items: tuple[int, int, int, int], at: float = 1.0) -> Applied:
        return self.apply({"op": "assign", "at": at, "items": [list(i) for i in items]})

    def finish(self, *items: tuple[int, int, bool, Any, float], at: float = 2.0) -> Applied:
        return self.apply({"op": "finish", "at": at, "items": [list(i) for i in items]})

    def cancel(self, task_id: int, at: float = 3.0) -> Applied:
        return self.apply({"op": "cancel", "at": at, "id": task_id})

    def state(self, task_id: int) -> str:
        return self.table.tasks[task_id].state


def check_consistent(table: TaskTable) -> None:
    """`counts` match the tasks' states; `running` indexes exactly the running tasks."""
    actual = Counter(t.state for t in table.tasks.values())
    assert table.counts == {s: actual.get(s, 0) for s in STATES}
    indexed = {(w, t) for w, ids in table.running.items() for t in ids}
    running = {(t.worker, t.id) for t in table.tasks.values() if t.state == "running"}
    assert indexed == running
    finished = {(t.queue, t.id, t.trimmed) for t in table.tasks.values() if t.state in TERMINAL}
    ordered = {(q, i, False) for q, ids in table.finished.items() for i in ids}
    ordered |= {(q, i, True) for q, ids in table.trimmed.items() for i in ids}
    assert ordered == finished  # retention's orders hold exactly the finished tasks


def echo(**extra: Any) -> dict[str, Any]:
    return {"kind": "echo", "args": extra.pop("args", None), **extra}


def snapshot(table: TaskTable) -> dict[str, Any]:
    state = copy.deepcopy(vars(table))
    state["tasks"] = {i: t.to_json() for i, t in table.tasks.items()}
    del state["applied_index"]
    return state


# ------------------------------------------------------------------------ submit


def test_ids_are_given_in_apply_order() -> None:
    t = Table()
    first = t.submit(echo(args=1), echo(args=2))
    second = t.submit(echo(args=3))
    assert first == Applied(1, "submit", (1, 2), (True, True), ready=(1, 2))
    assert second == Applied(2, "submit", (3,), (True,), ready=(3,))
    assert [t.table.tasks[i].args for i in (1, 2, 3)] == [1, 2, 3]
    assert t.table.next_id == 4


def test_submitted_task_takes_its_times_from_the_entry() -> None:
    t = Table()
    t.submit(echo(), echo(delay=5.0), at=100.0)
    now, later = t.table.tasks[1], t.table.tasks[2]
    assert (now.state, now.submitted_at, now.not_before) == ("queued", 100.0, 100.0)
    assert (later.state, later.not_before) == ("scheduled", 105.0)


def test_idempotency_key_returns_the_existing_task() -> None:
    t = Table()
    t.submit(echo(args="first", key="k"))
    again = t.submit(echo(args="second", key="k"), echo(args="new"))
    assert again.task_ids == (1, 2)
    assert again.created == (False, True)
    assert t.table.tasks[1].args == "first"
    assert len(t.table.tasks) == 2


def test_repeated_request_id_returns_the_tasks_it_made() -> None:
    t = Table()
    first = t.submit(echo(args=1), echo(args=2), rid="r1")
    again = t.submit(echo(args=1), echo(args=2), rid="r1")
    assert again.task_ids == first.task_ids == (1, 2)
    assert again.created == (False, False)
    assert len(t.table.tasks) == 2
    assert t.submit(echo(), rid="r2").task_ids == (3,)


def test_batch_refs_become_dependencies() -> None:
    t = Table()
    t.submit(echo())  # task 1, outside the batch
    applied = t.submit(
        echo(ref="a"),
        echo(ref="b", after=["a"]),
        echo(after=["a", "b"], depends_on=[1]),
    )
    assert applied.task_ids == (2, 3, 4)
    assert t.table.tasks[2].depends_on == ()
    assert t.table.tasks[3].depends_on == (2,)
    assert t.table.tasks[4].depends_on == (1, 2, 3)
    assert [t.state(i) for i in (2, 3, 4)] == ["queued", "blocked", "blocked"]
    assert sorted(t.table.tasks[2].dependents) == [3, 4]


def test_ref_to_a_keyed_existing_task_names_that_task() -> None:
    t = Table()
    t.submit(echo(key="k"))
    applied = t.submit(echo(ref="a", key="k"), echo(after=["a"]))
    assert applied.task_ids == (1, 2)
    assert t.table.tasks[2].depends_on == (1,)


def test_task_submitted_after_a_failed_dependency_is_cancelled() -> None:
    t = Table()
    t.submit(echo(max_attempts=1))
    t.assign((1, 1, 7, 1))
    t.finish((1, 1, False, "boom", 0.0))
    t.submit(echo(depends_on=[1]))
    assert t.state(2) == "cancelled"


# ------------------------------------------------------------------------ cancel


def test_cancel_cascades_to_dependents() -> None:
    t = Table()
    t.submit(echo(ref="a"), echo(ref="b", after=["a"]), echo(after=["b"]), echo())
    assert t.cancel(1) == Applied(t.index, "cancel", (1,))
    assert [t.state(i) for i in (1, 2, 3, 4)] == ["cancelled"] * 3 + ["queued"]
    assert t.table.tasks[1].error == "cancelled"
    assert t.table.tasks[3].error == "dependency 2 was cancelled"
    assert t.table.tasks[3].finished_at == 3.0


def test_cancel_of_a_running_task_stops_its_attempt() -> None:
    t = Table()
    t.submit(echo())
    t.assign((1, 1, 7, 1))
    applied = t.cancel(1)
    assert t.state(1) == "cancelled"
    assert t.table.running[7] == set()
    assert applied.ended == ((1, 1),)


def test_cancel_of_a_terminal_or_missing_task_changes_nothing() -> None:
    t = Table()
    t.submit(echo())
    t.cancel(1)
    before = snapshot(t.table)
    assert t.cancel(1).outcome == "terminal"
    assert t.cancel(99).outcome == "missing"
    assert snapshot(t.table) == before


# ------------------------------------------------------------------------ assign


def test_assign_counts_only_for_a_ready_task() -> None:
    t = Table()
    t.submit(echo(ref="a"), echo(after=["a"]), echo(delay=9.0))
    applied = t.assign((1, 1, 7, 1), (2, 1, 7, 1), (3, 1, 8, 2), (99, 1, 7, 1))
    assert applied.task_ids == (1, 3)  # the blocked one and the unknown one are skipped
    assert [t.state(i) for i in (1, 2, 3)] == ["running", "blocked", "running"]
    task = t.table.tasks[3]
    assert (task.attempt, task.worker, task.incarnation, task.started_at) == (1, 8, 2, 1.0)
    assert t.table.running == {7: {1}, 8: {3}}


def test_assign_counts_only_for_the_next_attempt() -> None:
    t = Table()
    t.submit(echo())
    assert t.assign((1, 2, 7, 1)).task_ids == ()
    assert t.assign((1, 1, 7, 1)).task_ids == (1,)
    assert t.assign((1, 2, 8, 1)).task_ids == ()  # already running: not ready
    assert (t.table.tasks[1].worker, t.table.tasks[1].attempt) == (7, 1)


# ------------------------------------------------------------------------ finish


def test_finish_for_a_stale_attempt_is_ignored() -> None:
    t = Table()
    t.submit(echo())
    t.assign((1, 1, 7, 1))
    t.finish((1, 1, False, "lost", 2.5))
    t.assign((1, 2, 8, 1), at=3.0)
    assert t.finish((1, 1, True, "late", 0.0)).task_ids == ()
    task = t.table.tasks[1]
    assert (task.state, task.attempt, task.worker, task.result) == ("running", 2, 8, None)


def test_finish_for_a_task_not_running_is_ignored() -> None:
    t = Table()
    t.submit(echo(), echo())
    t.cancel(2)
    before = snapshot(t.table)
    assert t.finish((1, 1, True, 1, 0.0), (2, 1, True, 1, 0.0), (9, 1, True, 1, 0.0)).task_ids == ()
    assert snapshot(t.table) == before


def test_failure_with_attempts_left_is_scheduled_at_retry_at() -> None:
    t = Table()
    t.submit(echo(max_attempts=3))
    t.assign((1, 1, 7, 1))
    applied = t.finish((1, 1, False, "boom", 4.25))
    assert applied.task_ids == (1,)
    task = t.table.tasks[1]
    assert (task.state, task.not_before, task.error, task.attempt) == ("scheduled", 4.25, "boom", 1)
    assert task.finished_at is None
    assert applied.ready == (1,)
    assert applied.ended == ((1, 1),)
    assert t.table.running[7] == set()


def test_last_failed_attempt_fails_the_task_and_cancels_dependents() -> None:
    t = Table()
    t.submit(echo(ref="a", max_attempts=2), echo(ref="b", after=["a"]), echo(after=["b"]))
    t.assign((1, 1, 7, 1))
    t.finish((1, 1, False, "first", 2.5))
    t.assign((1, 2, 7, 1), at=3.0)
    t.finish((1, 2, False, "second", 0.0), at=4.0)
    task = t.table.tasks[1]
    assert (task.state, task.attempt, task.error, task.finished_at) == ("failed", 2, "second", 4.0)
    assert [t.state(i) for i in (2, 3)] == ["cancelled", "cancelled"]
    assert t.table.tasks[2].error == "dependency 1 failed"
    assert t.table.tasks[3].error == "dependency 2 was cancelled"


def test_success_releases_dependents_whose_dependencies_all_succeeded() -> None:
    t = Table()
    t.submit(echo(ref="a"), echo(ref="b"), echo(after=["a", "b"]), echo(after=["a"]))
    t.assign((1, 1, 7, 1), (2, 1, 8, 1))
    applied = t.finish((1, 1, True, {"x": 1}, 0.0))
    assert t.table.tasks[1].result == {"x": 1}
    assert [t.state(i) for i in (1, 3, 4)] == ["succeeded", "blocked", "queued"]
    assert applied.ready == (4,)
    assert t.finish((2, 1, True, None, 0.0)).ready == (3,)
    assert t.state(3) == "queued"


def test_counts_stay_consistent_through_a_long_mixed_history() -> None:
    t = Table()  # `Table.apply` checks counts and the running index after every command
    t.submit(echo(ref="a", max_attempts=2), echo(after=["a"]), echo(delay=1.0), echo(), rid="r")
    t.submit(echo(), rid="r")
    t.assign((1, 1, 1, 1), (3, 1, 2, 1), (4, 1, 1, 1))
    t.finish((1, 1, False, "x", 5.0), (3, 1, True, 3, 0.0))
    t.cancel(4)
    t.assign((1, 2, 2, 1))
    t.submit(echo(depends_on=[1]))
    t.finish((1, 2, False, "y", 0.0), (4, 1, True, 4, 0.0))
    t.cancel(5)
    t.apply({"op": "noop"})
    assert dict(t.table.counts) == {
        "blocked": 0,
        "scheduled": 0,
        "queued": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 1,
        "cancelled": 3,
    }


# ------------------------------------------------------------------------ malformed

MALFORMED = [
    "not json",
    "[]",
    "null",
    '"submit"',
    '{"op": "submit"}',
    '{"op": "submit", "at": 0, "tasks": [{"args": 1}]}',
    '{"op": "submit", "at": 0, "tasks": 5}',
    '{"op": "submit", "at": 0, "rid": [1], "tasks": []}',
    '{"op": "submit", "at": 0, "tasks": [{"kind": "echo", "after": ["nope"]}]}',
    '{"op": "submit", "at": 0, "tasks": [{"kind": "echo", "delay": "soon"}]}',
    '{"op": "cancel", "at": 0}',
    '{"op": "assign", "at": 0, "items": [[1, 1]]}',
    '{"op": "assign", "at": 0, "items": 7}',
    '{"op": "finish", "at": 0, "items": [[1, 1, true]]}',
    '{"op": "finish", "at": 0}',
]


@pytest.mark.parametrize("command", MALFORMED)
def test_malformed_command_is_skipped_without_raising(command: str) -> None:
    t = Table()
    t.submit(echo(), echo(ref="a"), echo(after=["a"]))
    t.assign((1, 1, 7, 1))
    before = snapshot(t.table)
    applied = t.apply(command)
    assert applied == Applied(t.index, "invalid", outcome="invalid")
    assert t.table.applied_index == t.index
    assert snapshot(t.table) == before


def test_malformed_command_is_skipped_the_same_way_on_every_peer() -> None:
    peers = [Table(), Table()]
    for peer in peers:
        peer.submit(echo())
        for command in MALFORMED:
            peer.apply(command)
        peer.submit(echo())
    assert snapshot(peers[0].table) == snapshot(peers[1].table)
    assert sorted(peers[0].table.tasks) == [1, 2]


@pytest.mark.parametrize(
    "command",
    [
        {"op": "submit", "at": 0, "tasks": [{"kind": "echo"}, {"args": "no kind"}]},
        {"op": "assign", "at": 0, "items": [[1, 1, 7, 1], [2, 1]]},
    ],
)
def test_malformed_command_has_no_effect_even_after_a_valid_item(command: dict[str, Any]) -> None:
    t = Table()
    t.submit(echo(), echo())
    before = snapshot(t.table)
    assert t.apply(command).outcome == "invalid"
    assert snapshot(t.table) == before


def test_a_follower_applying_100000_submits_holds_nothing_per_task_beyond_the_tasks() -> None:
    """What applying changed is returned, never left in the table for another module to
    drain: a follower (which schedules nothing) keeps no per-task list that grows."""
    table = TaskTable()
    spec = TaskSpec("echo")
    for index in range(1, 100_001):
        table.apply_command(index, Submit(float(index), (spec,)))
    assert len(table.tasks) == 100_000
    per_task_lists = {
        name: len(value)
        for name, value in vars(table).items()
        if isinstance(value, list | dict | set) and name != "tasks" and len(value) > 100
    }
    assert per_task_lists == {}, per_task_lists


def test_a_retry_gives_a_failed_or_cancelled_task_a_new_attempt_budget() -> None:
    t = Table()
    t.submit(echo(max_attempts=2), echo())
    t.assign((1, 1, 7, 1))
    t.finish((1, 1, False, "one", 2.5))
    t.assign((1, 2, 7, 1), at=3.0)
    t.finish((1, 2, False, "two", 0.0), at=4.0)
    assert t.state(1) == "failed"
    applied = t.table.apply_command(t.next_index(), Retry(5.0, (1, 2, 99)))
    assert applied.task_ids == (1,) and applied.ready == (1,)  # task 2 is queued, 99 unknown
    task = t.table.tasks[1]
    assert (task.state, task.attempt, task.max_attempts, task.error) == ("queued", 2, 4, None)


def test_a_task_whose_dependency_failed_is_not_retried_before_it() -> None:
    t = Table()
    t.submit(echo(ref="a", max_attempts=1), echo(after=["a"]))
    t.assign((1, 1, 7, 1))
    t.finish((1, 1, False, "boom", 0.0))
    assert t.state(2) == "cancelled"
    assert t.table.apply_command(t.next_index(), Retry(5.0, (2,))).task_ids == ()
    assert t.table.apply_command(t.next_index(), Retry(5.0, (1,))).task_ids == (1,)
    assert t.table.apply_command(t.next_index(), Retry(5.0, (2,))).task_ids == (2,)
    assert t.state(2) == "blocked"  # waits for its dependency's new attempt


def test_a_drained_peer_is_remembered_until_undrained() -> None:
    table = TaskTable()
    table.apply_command(1, Drain(1.0, 3, True))
    assert table.drained == {3}
    table.apply_command(2, Drain(2.0, 3, False))
    assert table.drained == set()
