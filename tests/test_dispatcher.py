"""Ring 1 for execution bookkeeping: `Dispatcher`, each test named after the rule it
checks (see the module docstring of `peer.protocol.dispatch`). It is driven with a real
`TaskTable` and `Scheduler`, as the core drives it: typed commands are applied with
`TaskTable.apply_command` and what they did (`Applied`) goes to `on_applied`; a round's
commands are applied the same way, as if the leader's entries had committed.
"""

from __future__ import annotations

from typing import Any

import pytest

from peer.protocol.commands import (
    Assign,
    Assignment,
    Cancel,
    Command,
    Finish,
    Outcome,
    Submit,
    TaskSpec,
)
from peer.protocol.dispatch import Dispatcher, WorkOrders
from peer.protocol.messages import ResultItem
from peer.protocol.scheduler import Scheduler, Worker
from peer.protocol.tasks import TaskTable
from tests.test_scheduler import FixedRandom

ME = 1  # the dispatcher's own peer id
W1, W2, W3 = Worker(1, 1), Worker(2, 1), Worker(3, 1)
LIVE = {1: 1, 2: 1, 3: 1}  # every peer alive, first incarnation
JITTER = 0.5  # what the scheduler's random source always returns


class Peer:
    """One peer's task table and dispatcher, fed applied commands as the core feeds it."""

    def __init__(
        self, node_id: int = ME, incarnation: int = 1, leading: bool = True, slots: int = 4
    ) -> None:
        self.table = TaskTable()
        self.dispatcher = Dispatcher(
            node_id, incarnation, Scheduler("fifo", slots, FixedRandom(JITTER))
        )
        self.leading = leading
        self.index = 0
        if leading:
            self.dispatcher.lead(self.table)

    @property
    def scheduler(self) -> Scheduler:
        return self.dispatcher.scheduler

    def apply(self, *commands: Command) -> WorkOrders:
        """Apply `commands` as one batch of committed entries; the dispatcher's orders."""
        applied = []
        for command in commands:
            self.index += 1
            applied.append(self.table.apply_command(self.index, command))
        return self.dispatcher.on_applied(self.table, applied, self.leading)

    def submit(self, *specs: TaskSpec, at: float = 0.0) -> tuple[int, ...]:
        before = self.table.next_id
        self.apply(Submit(at, specs or (echo(),)))
        return tuple(range(before, self.table.next_id))

    def round(
        self,
        wall: float = 1.0,
        workers: tuple[Worker, ...] = (W1, W2, W3),
        live: dict[int, int] | None = None,
        judge_lost: bool = False,
    ) -> list[Command]:
        live = LIVE if live is None else live
        return self.dispatcher.round(wall, self.table, list(workers), live, judge_lost)

    def run(self, wall: float = 1.0, **kw: Any) -> list[Command]:
        """Run a round and apply its commands at once (they committed)."""
        commands = self.round(wall, **kw)
        self.apply(*commands)
        return commands

    def result(self, task_id: int, ok: bool = True, value: str = "null") -> ResultItem:
        """The result of the task's current attempt."""
        return ResultItem(task_id, self.table.tasks[task_id].attempt, ok, value)

    def accept(self, sender: int, *items: ResultItem, wall: float = 2.0) -> None:
        self.dispatcher.accept(wall, self.table, sender, list(items))


def echo(**kw: Any) -> TaskSpec:
    return TaskSpec("echo", **kw)


def finishes(commands: list[Command]) -> list[Finish]:
    return [c for c in commands if isinstance(c, Finish)]


def outcomes(commands: list[Command]) -> list[Outcome]:
    return [o for c in finishes(commands) for o in c.items]


def assigned(commands: list[Command]) -> list[int]:
    return [a.task for c in commands if isinstance(c, Assign) for a in c.items]


def started(orders: WorkOrders) -> list[tuple[int, int]]:
    return [(task.id, task.attempt) for task in orders.starts]


def backoff(wall: float, attempt: int) -> float:
    """`retry_at` of the scheduler's default backoff (0.5 s base) at the fixed jitter."""
    return wall + 0.5 * 2.0 ** (attempt - 1) * (0.5 + 0.5 * JITTER)


# ------------------------------------------------------------------ round order


def test_a_round_proposes_finishes_first_then_assignments() -> None:
    """A result frees its slot for the same round's assignments: the finish goes first."""
    peer = Peer()
    (first,) = peer.submit()
    peer.run(workers=(W2,))
    peer.accept(2, peer.result(first))
    (second,) = peer.submit()
    commands = peer.round(wall=3.0)
    assert [type(c) for c in commands] == [Finish, Assign]
    assert outcomes(commands) == [Outcome(first, 1, True, None, 0.0)]
    assert assigned(commands) == [second]


def test_a_round_proposes_at_most_one_finish_and_one_assign() -> None:
    """Every result reported, every overdue attempt and every assignment of a round go
    into one `finish` and one `assign` command."""
    peer = Peer()
    a, b, c = peer.submit(echo(), echo(), echo(timeout=1.0))
    peer.run(wall=1.0, workers=(W2, W3))  # a, c on 2; b on 3
    peer.accept(2, peer.result(a))
    peer.accept(3, peer.result(b, ok=False, value="boom"))
    peer.submit(echo(), echo(), echo())
    commands = peer.round(wall=5.0)  # c timed out meanwhile
    assert [type(cmd) for cmd in commands] == [Finish, Assign]
    assert sorted(o.task for o in outcomes(commands)) == [a, b, c]
    assert len(assigned(commands)) == 3
    assert peer.round(wall=5.0) == []  # all of it was handed out, none kept for later


# ------------------------------------------------------------------------ accept


def _running_on_2() -> tuple[Peer, int]:
    """A leader whose task 1 runs its first attempt on peer 2."""
    peer = Peer()
    (task,) = peer.submit()
    peer.run(workers=(W2,))
    return peer, task


def test_accept_queues_a_finish_for_the_running_attempt_of_its_worker() -> None:
    peer, task = _running_on_2()
    peer.accept(2, peer.result(task, value="7"))
    assert outcomes(peer.round()) == [Outcome(task, 1, True, 7, 0.0)]


@pytest.mark.parametrize("case", ["wrong sender", "wrong attempt", "not running", "unknown task"])
def test_accept_queues_nothing_but_for_the_running_attempt_of_its_worker(case: str) -> None:
    """A result counts only from the worker the running attempt was assigned to, for
    that attempt: a stale, misdirected or forged one proposes nothing."""
    peer, task = _running_on_2()
    sender, item = 2, ResultItem(task, 1, True, "1")
    if case == "wrong sender":
        sender = 3
    elif case == "wrong attempt":
        item = ResultItem(task, 2, True, "1")
    elif case == "not running":
        peer.apply(Cancel(1.5, task))
    else:
        item = ResultItem(99, 1, True, "1")
    peer.accept(sender, item)
    assert finishes(peer.round(wall=2.0)) == []


def test_a_result_resent_every_heartbeat_is_proposed_once_per_attempt() -> None:
    """The worker resends a result until it sees the finish applied: the leader proposes
    it once, whether the copies come in one batch or in later rounds."""
    peer, task = _running_on_2()
    item = peer.result(task)
    peer.accept(2, item, item)
    first = peer.round(wall=2.0)
    assert outcomes(first) == [Outcome(task, 1, True, None, 0.0)]
    peer.accept(2, item)  # the next heartbeat's copy, the finish not yet applied
    assert finishes(peer.round(wall=2.1)) == []
    peer.apply(*first)
    peer.accept(2, item)  # a copy that crossed the applied finish
    assert finishes(peer.round(wall=2.2)) == []


def test_a_later_attempt_is_proposed_after_an_earlier_one_failed() -> None:
    """Once-per-attempt, not once per task: the retry's result is proposed too."""
    peer, task = _running_on_2()
    peer.accept(2, peer.result(task, ok=False, value="boom"))
    peer.apply(*peer.round(wall=2.0))
    peer.run(wall=10.0, workers=(W2,))  # past the backoff: attempt 2, again on peer 2
    assert peer.table.tasks[task].attempt == 2
    peer.accept(2, peer.result(task))
    assert outcomes(peer.round(wall=11.0)) == [Outcome(task, 2, True, None, 0.0)]


# ---------------------------------------------------------------------- outcomes


def test_a_failed_results_outcome_carries_the_schedulers_retry_at() -> None:
    peer, task = _running_on_2()
    peer.accept(2, peer.result(task, ok=False, value="boom"), wall=10.0)
    (outcome,) = outcomes(peer.round(wall=10.0))
    assert outcome == Outcome(task, 1, False, "boom", backoff(10.0, 1))
    assert outcome.retry_at == peer.scheduler.retry_at(10.0, 1)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('"x"', "x"),
        ("42", 42),
        ('{"a": [1, 2.5, null]}', {"a": [1, 2.5, None]}),
        ("null", None),
        ("not json", "not json"),
        ("", ""),
    ],
)
def test_an_ok_results_value_is_parsed_from_json_text(text: str, value: Any) -> None:
    """The worker sends a success's result as JSON text; the log holds the value (text
    that is not JSON is kept as a string)."""
    peer, task = _running_on_2()
    peer.accept(2, peer.result(task, value=text))
    assert outcomes(peer.round()) == [Outcome(task, 1, True, value, 0.0)]


def test_a_failed_results_message_is_kept_as_text() -> None:
    """An error message is text, even one that looks like JSON."""
    peer, task = _running_on_2()
    peer.accept(2, peer.result(task, ok=False, value='{"a": 1}'))
    assert [o.value for o in outcomes(peer.round())] == ['{"a": 1}']


# ---------------------------------------------------------------- starts and stops


@pytest.mark.parametrize("leading", [True, False])
def test_an_applied_assign_naming_this_peer_and_incarnation_starts_it(leading: bool) -> None:
    """On any peer: an assignment to this peer's current run is started here."""
    peer = Peer(node_id=2, incarnation=3, leading=leading)
    (task,) = peer.submit()
    orders = peer.apply(Assign(1.0, (Assignment(task, 1, 2, 3),)))
    assert started(orders) == [(task, 1)]
    assert orders.starts[0] is peer.table.tasks[task]
    assert orders.stops == []


@pytest.mark.parametrize("leading", [True, False])
@pytest.mark.parametrize(("worker", "incarnation"), [(2, 2), (2, 4), (1, 3), (3, 3)], ids=str)
def test_an_applied_assign_naming_another_run_or_peer_starts_nothing(
    leading: bool, worker: int, incarnation: int
) -> None:
    """An assignment meant for an earlier run of this peer (its attempt is lost with that
    run: the leader fails it as restarted) or for another peer is not started here."""
    peer = Peer(node_id=2, incarnation=3, leading=leading)
    (task,) = peer.submit()
    orders = peer.apply(Assign(1.0, (Assignment(task, 1, worker, incarnation),)))
    assert peer.table.tasks[task].state == "running"  # the assignment took, elsewhere
    assert orders.starts == [] and orders.stops == []


def test_an_assign_that_did_not_take_starts_nothing() -> None:
    """An assignment the table refused (a stale attempt number) is not started."""
    peer = Peer(leading=False)
    (task,) = peer.submit()
    orders = peer.apply(Assign(1.0, (Assignment(task, 2, ME, 1),)))
    assert peer.table.tasks[task].state == "queued"
    assert orders.starts == []


def _ender(kind: str, task: int) -> Command:
    if kind == "finish":
        return Finish(2.0, (Outcome(task, 1, True, None),))
    return Cancel(2.0, task)


@pytest.mark.parametrize("leading", [True, False])
@pytest.mark.parametrize("kind", ["finish", "cancel"])
def test_an_attempt_that_ends_while_running_here_is_stopped(kind: str, leading: bool) -> None:
    peer = Peer(leading=leading)
    (task,) = peer.submit()
    assert started(peer.apply(Assign(1.0, (Assignment(task, 1, ME, 1),)))) == [(task, 1)]
    orders = peer.apply(_ender(kind, task))
    assert orders.stops == [(task, 1)]
    assert orders.starts == []
    assert peer.apply(Cancel(3.0, task)).stops == []  # stopped once


@pytest.mark.parametrize("kind", ["finish", "cancel"])
def test_an_attempt_that_ends_elsewhere_is_not_stopped_here(kind: str) -> None:
    peer = Peer(leading=False)
    (task,) = peer.submit()
    peer.apply(Assign(1.0, (Assignment(task, 1, 2, 1),)))
    assert peer.apply(_ender(kind, task)).stops == []


@pytest.mark.parametrize("leading", [True, False])
@pytest.mark.parametrize("kind", ["finish", "cancel"])
def test_an_attempt_that_ends_in_its_start_batch_is_never_started(kind: str, leading: bool) -> None:
    """Assigned and ended in the same batch of applied entries: no start, no stop."""
    peer = Peer(leading=leading)
    mine, other = peer.submit(echo(), echo())
    orders = peer.apply(
        Assign(1.0, (Assignment(mine, 1, ME, 1), Assignment(other, 1, ME, 1))),
        _ender(kind, mine),
    )
    assert started(orders) == [(other, 1)]  # the other attempt still starts
    assert orders.stops == []
    assert peer.apply(Cancel(3.0, mine)).stops == []  # nor is it stopped later


def _retried_here(*more: Command) -> WorkOrders:
    """A follower applying in one batch (catching up): attempt 1 of task 1 on peer 2,
    its failure, attempt 2 on this peer, then `more`."""
    peer = Peer(leading=False)
    (task,) = peer.submit()
    return peer.apply(
        Assign(1.0, (Assignment(task, 1, 2, 1),)),
        Finish(2.0, (Outcome(task, 1, False, "boom", 2.5),)),
        Assign(3.0, (Assignment(task, 2, ME, 1),)),
        *more,
    )


# on_applied reads the table after the whole batch was applied: an earlier assign of
# the same task (another attempt, another peer) must not count as a start of a later one


def test_an_attempt_is_started_once_even_when_its_task_was_assigned_twice_in_the_batch() -> None:
    assert started(_retried_here()) == [(1, 2)]


def test_an_attempt_that_ends_in_its_start_batch_is_never_started_after_a_retry() -> None:
    orders = _retried_here(Finish(4.0, (Outcome(1, 2, False, "boom", 4.5),)))
    assert orders.starts == [] and orders.stops == []


# ---------------------------------------------------------------------- followers


def test_a_follower_leaves_nothing_behind_in_the_scheduler() -> None:
    """A follower's applied entries are not scheduled (a new leader rebuilds from the
    table with `lead`): nothing piles up while it follows."""
    peer = Peer(leading=False)
    for n in range(1000):
        peer.submit(echo(args=n), at=float(n % 3))
    (task,) = peer.submit()
    peer.apply(Assign(1.0, (Assignment(task, 1, 2, 1),)))
    peer.apply(Finish(2.0, (Outcome(task, 1, False, "boom", 9.0),)))
    assert not peer.scheduler.has_ready(float("inf"))
    assert peer.scheduler.next_release() is None
    peer.dispatcher.lead(peer.table)
    assert peer.scheduler.has_ready(float("inf"))
    commands = peer.dispatcher.round(1.0, peer.table, [W1, W2, W3], LIVE, False)
    assert len(assigned(commands)) == 3 * 4  # every slot filled from the rebuilt schedule


# -------------------------------------------------------------------- needs_round


def test_no_round_is_needed_when_nothing_is_ready_running_or_reported() -> None:
    peer = Peer()
    assert peer.dispatcher.needs_round(1.0, peer.table, judging=True) == (False, False)
    (task,) = peer.submit()
    peer.run(workers=(W2,))
    peer.accept(2, peer.result(task))
    peer.run(wall=2.0)
    assert peer.table.tasks[task].state == "succeeded"
    assert peer.dispatcher.needs_round(3.0, peer.table, judging=True) == (False, False)


def test_a_task_waiting_for_its_time_needs_a_round_only_once_it_is_due() -> None:
    peer = Peer()
    peer.submit(echo(delay=30.0), at=1.0)
    assert peer.dispatcher.needs_round(2.0, peer.table, judging=True) == (False, False)
    assert peer.dispatcher.needs_round(31.0, peer.table, judging=False) == (True, False)


@pytest.mark.parametrize("case", ["queued", "running", "reported"])
def test_a_round_is_needed_while_anything_is_queued_running_or_reported(case: str) -> None:
    peer = Peer()
    judge = False
    if case == "queued":
        peer.submit()
    else:
        (task,) = peer.submit()
        peer.run(workers=(W2,))
        if case == "reported":  # a result is waiting to be proposed; nothing else runs
            peer.accept(2, peer.result(task))
            peer.apply(Cancel(2.5, task))
            assert not any(peer.table.running.values())
        else:  # running attempts are judged on ticks only
            judge = True
            assert peer.dispatcher.needs_round(2.0, peer.table, judging=False) == (False, False)
    assert peer.dispatcher.needs_round(2.0, peer.table, judging=True) == (True, judge)


# ------------------------------------------------------------------------ overdue


@pytest.mark.parametrize(
    ("live", "timeout", "wall", "reason"),
    [
        (LIVE, 1.0, 3.0, "timeout after 1s"),
        ({1: 1, 3: 1}, None, 2.0, "worker 2 lost"),
        ({1: 1, 2: 2, 3: 1}, None, 2.0, "worker 2 restarted"),
    ],
    ids=["timeout", "dead worker", "restarted worker"],
)
def test_an_overdue_attempt_becomes_a_failing_finish_in_the_round(
    live: dict[int, int], timeout: float | None, wall: float, reason: str
) -> None:
    peer = Peer()
    (task,) = peer.submit(echo(timeout=timeout))
    peer.run(wall=1.0, workers=(W2,))
    commands = peer.round(wall=wall, live=live, judge_lost=True)
    assert commands == [Finish(wall, (Outcome(task, 1, False, reason, backoff(wall, 1)),))]
    assert peer.round(wall=wall + 1, live=live, judge_lost=True) == []  # once
    peer.apply(*commands)
    assert peer.table.tasks[task].state == "scheduled"
    assert peer.table.tasks[task].not_before == backoff(wall, 1)


@pytest.mark.parametrize(
    "live", [{1: 1, 3: 1}, {1: 1, 2: 2, 3: 1}], ids=["dead worker", "restarted worker"]
)
def test_a_lost_worker_is_judged_only_when_judge_lost(live: dict[int, int]) -> None:
    """A new leader has not watched membership long enough to call a worker lost."""
    peer = Peer()
    (task,) = peer.submit()
    peer.run(wall=1.0, workers=(W2,))
    assert peer.round(wall=2.0, live=live, judge_lost=False) == []
    reasons = [o.value for o in outcomes(peer.round(wall=2.0, live=live, judge_lost=True))]
    assert len(reasons) == 1 and reasons[0].startswith("worker 2 ")


def test_a_timeout_is_judged_even_before_judging_lost_workers() -> None:
    peer = Peer()
    (task,) = peer.submit(echo(timeout=1.0))
    peer.run(wall=1.0, workers=(W2,))
    assert [o.value for o in outcomes(peer.round(wall=3.0))] == ["timeout after 1s"]


def test_a_live_worker_within_its_timeout_is_left_alone() -> None:
    peer = Peer()
    peer.submit(echo(timeout=5.0))
    peer.run(wall=1.0, workers=(W2,))
    assert peer.round(wall=3.0, judge_lost=True) == []
