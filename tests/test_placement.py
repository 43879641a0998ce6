"""Ring 1 for placement: a submit that starts its tasks in its own entry.

The leader's `Scheduler.place` picks the specs that may start at once (a free slot,
nothing waiting to be assigned, no delay, no dependency, a queue without a policy) and
holds their slots until the entry is applied; `TaskTable` starts a placed spec's new,
queued task as an assign would; every peer's `Dispatcher` starts the attempts placed on
it. Each test is named after the rule it checks.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from peer.protocol.commands import (
    CommandError,
    Placement,
    Submit,
    TaskSpec,
    decode_command,
    encode_command,
)
from peer.protocol.dispatch import Dispatcher
from peer.protocol.records import TaskState
from peer.protocol.scheduler import Scheduler, Worker
from peer.protocol.settings import QueuePolicy
from peer.protocol.tasks import TaskTable

W1, W2 = Worker(1, 7), Worker(2, 9)


def _scheduler(slots: int = 1, prefetch: int = 1, **kw: Any) -> Scheduler:
    return Scheduler("fifo", slots, random.Random(0), prefetch=prefetch, **kw)


def _placed(placements: list[Placement]) -> list[tuple[int, int, int]]:
    return [(p.position, p.worker, p.incarnation) for p in placements]


def test_specs_are_placed_round_robin_on_free_slots_with_each_workers_incarnation() -> None:
    scheduler, table = _scheduler(), TaskTable()
    specs = [TaskSpec("echo")] * 3
    assert _placed(scheduler.place(table, [W1, W2], specs)) == [(0, 1, 7), (1, 2, 9)]


def test_a_placed_slot_is_held_until_its_entry_is_applied() -> None:
    scheduler, table = _scheduler(), TaskTable()
    first = scheduler.place(table, [W1], [TaskSpec("echo")])
    scheduler.reserve(5, first)
    assert scheduler.place(table, [W1], [TaskSpec("echo")]) == []
    assert scheduler.plan(1.0, table, [W1]) == []  # nor does the scheduler assign into it
    table.apply(5, encode_command(Submit(1.0, (TaskSpec("echo"),), place=tuple(first))))
    scheduler.placed(5)  # now the table counts it: still no room
    assert scheduler.place(table, [W1], [TaskSpec("echo")]) == []
    assert table.running == {1: {1}}


def test_nothing_is_placed_while_a_task_waits_to_be_assigned() -> None:
    scheduler, table = _scheduler(), TaskTable()
    applied = table.apply(1, encode_command(Submit(1.0, (TaskSpec("echo"),))))
    assert scheduler.may_place(1.0, [TaskSpec("echo")])
    scheduler.take_ready(table, applied.ready)
    assert not scheduler.may_place(1.0, [TaskSpec("echo")])


@pytest.mark.parametrize(
    "spec",
    [
        TaskSpec("echo", delay=1.0),
        TaskSpec("echo", depends_on=(1,)),
        TaskSpec("echo", queue="capped"),
    ],
    ids=["delayed", "dependent", "queue-with-a-policy"],
)
def test_a_spec_that_cannot_start_at_once_is_left_to_the_scheduler(spec: TaskSpec) -> None:
    scheduler = _scheduler(queues={"capped": QueuePolicy(max_running=1)})
    assert not scheduler.may_place(1.0, [spec])
    assert scheduler.place(TaskTable(), [W1], [spec, TaskSpec("echo")]) == [Placement(1, 1, 7)]


def test_a_new_leader_holds_no_placement_of_an_earlier_one() -> None:
    scheduler, table = _scheduler(), TaskTable()
    scheduler.reserve(3, scheduler.place(table, [W1], [TaskSpec("echo")]))
    scheduler.reset(table)
    scheduler.placed(3)  # (applied after the reset: nothing to release, nothing breaks)
    assert _placed(scheduler.place(table, [W1], [TaskSpec("echo")])) == [(0, 1, 7)]


def test_a_placed_task_starts_its_first_attempt_in_the_submit_entry() -> None:
    table = TaskTable()
    submit = Submit(2.0, (TaskSpec("echo"), TaskSpec("echo")), place=(Placement(1, 2, 9),))
    applied = table.apply(1, encode_command(submit))
    assert applied.task_ids == (1, 2) and applied.started == (2,) and applied.ready == (1,)
    task = table.tasks[2]
    assert (task.state, task.attempt, task.worker, task.incarnation) == (
        TaskState.RUNNING,
        1,
        2,
        9,
    )
    assert task.started_at == 2.0 and [a.worker for a in task.attempts] == [2]
    assert table.tasks[1].state is TaskState.QUEUED


def test_a_placement_of_a_spec_that_made_no_new_queued_task_does_nothing() -> None:
    table = TaskTable()
    table.apply(1, encode_command(Submit(1.0, (TaskSpec("echo", key="k"),))))
    keyed = Submit(2.0, (TaskSpec("echo", key="k"),), place=(Placement(0, 1, 7),))
    delayed = Submit(2.0, (TaskSpec("echo", delay=5.0),), place=(Placement(0, 1, 7),))
    assert table.apply(2, encode_command(keyed)).started == ()
    assert table.apply(3, encode_command(delayed)).started == ()
    assert table.running == {} and table.tasks[2].state is TaskState.SCHEDULED


def test_only_the_placed_worker_at_its_incarnation_starts_the_attempt() -> None:
    submit = encode_command(Submit(1.0, (TaskSpec("echo"),), place=(Placement(0, 2, 9),)))
    started = {}
    for peer, incarnation in ((1, 7), (2, 9), (2, 10)):
        table = TaskTable()
        dispatcher = Dispatcher(peer, incarnation, _scheduler())
        orders = dispatcher.on_applied(table, [table.apply(1, submit)], leading=False)
        started[(peer, incarnation)] = [t.id for t in orders.starts]
    assert started == {(1, 7): [], (2, 9): [1], (2, 10): []}


def test_placements_round_trip_and_are_left_out_when_there_are_none() -> None:
    placed = Submit(1.0, (TaskSpec("echo"), TaskSpec("echo")), "r", (Placement(1, 3, 4),))
    assert decode_command(encode_command(placed)) == placed
    assert "place" not in orjson.loads(encode_command(Submit(1.0, (TaskSpec("echo"),))))


@pytest.mark.parametrize(
    "place",
    [[[1, 1, 1]], [[-1, 1, 1]], [[0, 1, 1], [0, 2, 1]], [[0, 1]], [["0", 1, 1]], {}],
    ids=["past-the-specs", "negative", "twice", "short", "not-an-integer", "not-a-list"],
)
def test_a_malformed_placement_refuses_the_whole_submit(place: Any) -> None:
    text = orjson.dumps(
        {"op": "submit", "at": 1.0, "tasks": [{"kind": "echo"}], "place": place}
    ).decode()
    with pytest.raises(CommandError):
        decode_command(text)
