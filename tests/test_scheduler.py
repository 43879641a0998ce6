"""Ring 1 for the leader's scheduling decisions: `Scheduler`, each test named after the
rule it checks. Tables are built the way the cluster builds them, by applying submit,
assign and finish commands (JSON text) through `TaskTable.apply`; the scheduler hears of
applied entries through `take_ready` and `applied`, as the dispatcher tells it.
"""

from __future__ import annotations

import random
import tomllib
from typing import Any

import orjson
import pytest

from peer.config import ConfigError, parse_config
from peer.protocol.commands import Assignment
from peer.protocol.dispatch import Dispatcher
from peer.protocol.scheduler import Scheduler, Worker
from peer.protocol.tasks import TaskTable

W1, W2, W3 = Worker(1, 1), Worker(2, 1), Worker(3, 1)


class Cluster:
    """A task table and the scheduler of its leader, fed through applied commands."""

    def __init__(
        self, policy: str = "fifo", slots: int = 10, rng: random.Random | None = None, **kw: Any
    ) -> None:
        self.table = TaskTable(kw.get("queues"))
        self.scheduler = Scheduler(policy, slots, rng or random.Random(0), **kw)
        self.index = 0

    def apply(self, command: dict[str, Any]) -> tuple[int, ...]:
        self.index += 1
        applied = self.table.apply(self.index, orjson.dumps(command).decode())
        assert applied.outcome == "ok", command
        if command["op"] == "finish":
            self.scheduler.finished(self.table, applied.ended)
        if command["op"] in ("assign", "finish", "cancel"):
            self.scheduler.applied(self.table, applied.task_ids)
        self.scheduler.take_ready(self.table, applied.ready)
        return applied.task_ids

    def submit(self, *specs: dict[str, Any], at: float = 0.0) -> tuple[int, ...]:
        return self.apply({"op": "submit", "at": at, "tasks": list(specs)})

    def plan(self, workers: list[Worker], wall: float = 1.0) -> list[list[int]]:
        planned = self.scheduler.plan(wall, self.table, workers)
        return [[a.task, a.attempt, a.worker, a.incarnation] for a in planned]

    def assign(self, items: list[list[int]], at: float = 1.0) -> tuple[int, ...]:
        return self.apply({"op": "assign", "at": at, "items": items})

    def run(self, workers: list[Worker], wall: float = 1.0) -> list[list[int]]:
        """Plan a round and apply its assignments at once."""
        items = self.plan(workers, wall)
        if items:
            self.assign(items, at=wall)
        return items

    def finish(self, task_id: int, ok: bool = True, value: Any = None, at: float = 2.0) -> None:
        attempt = self.table.tasks[task_id].attempt
        self.apply({"op": "finish", "at": at, "items": [[task_id, attempt, ok, value, at + 1]]})


def echo(**extra: Any) -> dict[str, Any]:
    return {"kind": "echo", **extra}


def tasks_of(items: list[list[int]] | list[Assignment]) -> list[int]:
    return [item.task if isinstance(item, Assignment) else item[0] for item in items]


def workers_of(items: list[list[int]]) -> list[int]:
    return [worker for _, _, worker, _ in items]


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


# ------------------------------------------------------------------ round-robin


def test_assignment_names_task_next_attempt_worker_and_incarnation() -> None:
    c = Cluster()
    c.submit(echo())
    assert c.plan([Worker(4, 7)]) == [[1, 1, 4, 7]]


def test_round_robin_over_workers_in_id_order() -> None:
    c = Cluster()
    c.submit(*[echo() for _ in range(7)])
    items = c.plan([W3, W1, W2])
    assert tasks_of(items) == [1, 2, 3, 4, 5, 6, 7]
    assert workers_of(items) == [1, 2, 3, 1, 2, 3, 1]


def test_round_robin_cursor_carries_on_across_rounds() -> None:
    c = Cluster()
    c.submit(echo(), echo())
    assert workers_of(c.run([W1, W2, W3])) == [1, 2]
    c.submit(echo(), echo())
    assert workers_of(c.run([W1, W2, W3])) == [3, 1]
    c.submit(echo())
    assert workers_of(c.run([W1, W2, W3])) == [2]


def test_round_robin_cursor_carries_on_when_workers_change() -> None:
    c = Cluster()
    c.submit(echo(), echo())
    assert workers_of(c.run([W1, W2, W3])) == [1, 2]
    c.submit(echo(), echo(), echo())
    assert workers_of(c.run([W1, W3, Worker(4, 1)])) == [3, 4, 1]


# ------------------------------------------------------------------------ slots


def test_a_worker_never_gets_more_than_its_slots() -> None:
    c = Cluster(slots=2)
    c.submit(*[echo() for _ in range(10)])
    first = c.run([W1, W2])
    assert workers_of(first) == [1, 2, 1, 2]
    assert c.run([W1, W2]) == []  # all four running: no free slot
    assert c.table.running == {1: {1, 3}, 2: {2, 4}}


def test_assignments_in_flight_take_slots() -> None:
    c = Cluster(slots=2)
    c.submit(*[echo() for _ in range(10)])
    assert len(c.plan([W1])) == 2
    assert c.plan([W1]) == []  # proposed, not yet applied: still counts
    assert len(c.plan([W2])) == 2


def test_a_finished_task_frees_its_slot() -> None:
    c = Cluster(slots=1)
    c.submit(echo(), echo())
    assert tasks_of(c.run([W1])) == [1]
    assert c.run([W1]) == []
    c.finish(1)
    assert tasks_of(c.run([W1])) == [2]


def test_a_reported_result_frees_the_slot_before_the_finish_commits() -> None:
    c = Cluster(slots=1)
    c.submit(echo(), echo())
    c.run([W1])
    assert c.run([W1]) == []
    assert c.scheduler.reported(1, 1, 1)
    assert tasks_of(c.run([W1])) == [2]
    c.finish(1)  # the finish commits later: the slot is not counted free twice
    assert c.plan([W1]) == []


# --------------------------------------------------------------------- prefetch


def slow(**extra: Any) -> dict[str, Any]:
    return {"kind": "slow", **extra}


def learned(c: Cluster, **seconds: float) -> None:
    """Run and finish one attempt of each kind, taking `seconds` from assign to finish."""
    for kind, took in seconds.items():
        (task,) = c.submit({"kind": kind})
        (item,) = c.plan([W3])
        c.assign([item], at=1.0)
        c.finish(task, at=1.0 + took)


def prefetching(**seconds: float) -> Cluster:
    """2 slots, prefetch 4, and one finished attempt of each kind in `seconds`."""
    c = Cluster(slots=2, prefetch=4)
    learned(c, **seconds)
    return c


def test_a_kind_not_seen_to_finish_yet_gets_only_the_slots() -> None:
    c = Cluster(slots=2, prefetch=4)
    c.submit(*[echo() for _ in range(20)])
    assert len(c.run([W1])) == 2


def test_a_kind_whose_attempts_were_short_is_prefetched() -> None:
    c = prefetching(echo=0.01)
    c.submit(*[echo() for _ in range(20)])
    assert workers_of(c.run([W1, W2])) == [1, 2] * 8  # slots x prefetch each
    assert c.run([W1, W2]) == []


def test_a_worker_that_holds_a_long_attempt_holds_no_more_than_its_slots() -> None:
    c = prefetching(echo=0.01, slow=5.0)
    long_one, *short = c.submit(slow(), *[echo() for _ in range(10)])
    assert tasks_of(c.run([W1])) == [long_one, short[0]]  # nothing queued behind it
    c.finish(short[0], at=1.01)
    assert tasks_of(c.run([W1])) == [short[1]]  # a slot is free again, no more
    c.finish(long_one, at=6.0)
    c.finish(short[1], at=1.02)
    assert c.scheduler._long("slow") and not c.scheduler._long("echo")
    assert len(c.run([W1])) == 8  # holding short ones only: prefetched again


def test_a_long_attempt_may_follow_short_ones_but_nothing_follows_it() -> None:
    c = prefetching(echo=0.01, slow=5.0)
    ids = c.submit(*[echo() for _ in range(5)], slow(), echo())
    assert tasks_of(c.run([W1])) == list(ids[:6])  # it waits behind five short ones
    assert c.run([W1]) == []


def test_a_kind_whose_attempts_turn_long_loses_its_prefetch() -> None:
    c = prefetching(echo=0.01)
    learned(c, echo=0.2)
    assert not c.scheduler._long("echo")  # a moving mean: one long attempt does not tip it
    learned(c, echo=0.2)
    learned(c, echo=0.2)
    assert c.scheduler._long("echo")
    c.submit(*[echo() for _ in range(20)])
    assert len(c.run([W1])) == 2


def test_the_time_an_attempt_waited_behind_those_held_ahead_of_it_is_not_its_own() -> None:
    c = prefetching(echo=0.01)
    c.submit(*[echo() for _ in range(8)])
    items = c.run([W1])
    assert len(items) == 8
    *first, last = tasks_of(items)
    for task in first:
        c.finish(task, at=1.01)
    c.finish(last, at=1.5)  # three slots' worth were held ahead of it: 0.125 s its own
    assert not c.scheduler._long("echo")


def test_a_long_attempt_goes_to_a_worker_with_a_slot_free_to_start_it() -> None:
    c = prefetching(echo=0.01, slow=5.0)
    c.submit(*[echo() for _ in range(3)])
    c.run([W1])  # W1 holds three short ones: one waits for a slot
    (long_one,) = c.submit(slow())
    c.scheduler._last_worker = 0  # (W1 would be next in turn)
    assert workers_of(c.run([W1, W2])) == [2]
    assert c.table.running[2] == {long_one}


def test_a_new_leader_learns_the_durations_from_the_table() -> None:
    c = prefetching(echo=0.01, slow=5.0)
    fresh = Scheduler("fifo", 2, random.Random(0), prefetch=4)
    fresh.reset(c.table)
    assert not fresh._long("echo") and fresh._long("slow")
    c.scheduler = fresh
    c.submit(*[echo() for _ in range(20)])
    assert len(c.run([W1])) == 8


def test_prefetch_one_is_one_attempt_per_slot_whatever_the_kind() -> None:
    c = Cluster(slots=2, prefetch=1)
    learned(c, echo=0.01)
    c.submit(*[echo() for _ in range(20)])
    assert len(c.run([W1])) == 2


def test_cluster_toml_sets_prefetch_below_and_refuses_one_not_positive() -> None:
    nodes = '[[node]]\nid = 1\nhost = "127.0.0.1"\nport = 7001\n'
    config = parse_config(tomllib.loads("[cluster]\nprefetch_below = 2.5\n" + nodes))
    assert config.settings().prefetch_below == 2.5
    assert parse_config(tomllib.loads(nodes)).settings().prefetch_below == 0.1
    with pytest.raises(ConfigError, match="prefetch_below"):
        parse_config(tomllib.loads("[cluster]\nprefetch_below = 0\n" + nodes))


def test_a_result_reported_twice_is_proposed_once() -> None:
    c = Cluster()
    c.submit(echo())
    c.run([W1])
    assert c.scheduler.reported(1, 1, 1) is True
    assert c.scheduler.reported(1, 1, 1) is False


# ------------------------------------------------------------------ live workers


def test_only_the_workers_passed_in_get_work() -> None:
    """Dead and suspect peers are left out of `workers` by the caller: they get nothing."""
    c = Cluster(slots=3)
    c.submit(*[echo() for _ in range(8)])
    items = c.run([W1, W3])
    assert set(workers_of(items)) == {1, 3}
    assert len(items) == 6


def test_no_live_workers_means_no_assignments() -> None:
    c = Cluster()
    c.submit(echo())
    assert c.plan([]) == []
    assert tasks_of(c.plan([W2])) == [1]  # it was not lost meanwhile


# ----------------------------------------------------------------- readiness


def test_a_blocked_task_is_not_assigned_until_its_dependency_succeeds() -> None:
    c = Cluster()
    c.submit(echo(ref="a"), echo(after=["a"]))
    assert tasks_of(c.run([W1, W2])) == [1]
    assert c.run([W1, W2]) == []
    c.finish(1)
    assert tasks_of(c.run([W1, W2])) == [2]


def test_a_task_is_not_assigned_before_its_not_before() -> None:
    c = Cluster()
    c.submit(echo(delay=5.0), at=10.0)
    assert c.table.tasks[1].state == "scheduled"
    assert c.plan([W1], wall=14.99) == []
    assert tasks_of(c.plan([W1], wall=15.0)) == [1]


def test_a_failed_attempt_is_retried_at_its_retry_time() -> None:
    c = Cluster()
    c.submit(echo())
    c.run([W1], wall=1.0)
    c.finish(1, ok=False, value="boom", at=2.0)  # retry_at = 3.0
    assert c.table.tasks[1].state == "scheduled"
    assert c.plan([W1], wall=2.99) == []
    assert c.plan([W1], wall=3.0) == [[1, 2, 1, 1]]


def test_retry_goes_to_the_next_worker_with_the_next_attempt() -> None:
    c = Cluster()
    c.submit(echo())
    c.run([W1, W2], wall=1.0)
    c.finish(1, ok=False, value="boom", at=2.0)  # retry_at = 3.0
    assert c.plan([W1, W2], wall=2.99) == []
    assert c.plan([W1, W2], wall=3.0) == [[1, 2, 2, 1]]


def test_reset_takes_every_ready_task_from_the_table() -> None:
    c = Cluster()
    c.submit(echo(), echo(delay=1.0), echo(ref="a"), echo(after=["a"]))
    fresh = Scheduler("fifo", 10, random.Random(0))
    fresh.reset(c.table)
    assert tasks_of(fresh.plan(0.5, c.table, [W1])) == [1, 3]
    assert tasks_of(fresh.plan(1.0, c.table, [W1])) == [2]


# ------------------------------------------------------------------ policies


def test_fifo_assigns_by_id_whatever_the_priority() -> None:
    c = Cluster("fifo")
    c.submit(echo(priority=1), echo(priority=9), echo(priority=5), echo(queue="b"))
    assert tasks_of(c.plan([W1])) == [1, 2, 3, 4]


def test_priority_assigns_higher_first_then_by_id() -> None:
    c = Cluster("priority")
    c.submit(echo(priority=1), echo(priority=9), echo(priority=5), echo(priority=9), echo())
    assert tasks_of(c.plan([W1])) == [2, 4, 3, 1, 5]


def test_priority_counts_across_rounds() -> None:
    c = Cluster("priority", slots=1)
    c.submit(echo(priority=1), echo(priority=2))
    assert tasks_of(c.run([W1])) == [2]
    c.submit(echo(priority=5))
    c.finish(2)
    assert tasks_of(c.run([W1])) == [3]


def test_fair_round_robins_over_queues_fifo_within_each() -> None:
    c = Cluster("fair")
    c.submit(*[echo(queue="a") for _ in range(4)], echo(queue="b"), echo(queue="b"))
    c.submit(echo(queue="c", priority=9))
    assert tasks_of(c.plan([W1])) == [1, 5, 7, 2, 6, 3, 4]


def test_fair_carries_on_over_queues_across_rounds() -> None:
    c = Cluster("fair", slots=1)
    c.submit(echo(queue="a"), echo(queue="a"), echo(queue="b"), echo(queue="b"))
    order = []
    for _ in range(4):
        [[task, *_]] = c.run([W1])
        order.append(task)
        c.finish(task)
    assert order == [1, 3, 2, 4]


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError):
        Scheduler("lifo", 1, random.Random(0))


# ------------------------------------------------------------------ in flight


def test_an_assignment_in_flight_is_not_proposed_twice() -> None:
    c = Cluster()
    c.submit(echo(), echo())
    first = c.plan([W1, W2])
    c.submit(echo())
    second = c.plan([W1, W2])
    assert tasks_of(first) == [1, 2]
    assert tasks_of(second) == [3]
    c.assign(first + second)
    assert c.plan([W1, W2]) == []


def test_a_task_cancelled_while_its_assignment_is_in_flight_frees_the_slot() -> None:
    c = Cluster(slots=1)
    c.submit(echo(), echo())
    items = c.plan([W1])
    assert tasks_of(items) == [1]
    c.apply({"op": "cancel", "at": 0.5, "id": 1})
    assert c.assign(items) == ()  # the assignment does not take
    assert tasks_of(c.plan([W1])) == [2]


def test_a_cancelled_task_is_never_assigned() -> None:
    c = Cluster()
    c.submit(echo(), echo())
    c.apply({"op": "cancel", "at": 0.5, "id": 1})
    assert tasks_of(c.plan([W1])) == [2]


# ------------------------------------------------------------------- overdue


def test_an_attempt_past_its_timeout_is_failed_once() -> None:
    c = Cluster()
    c.submit(echo(timeout=2.0), echo())
    c.run([W1], wall=10.0)
    live = {1: 1}
    assert c.scheduler.overdue(12.0, c.table, live, judge_lost=True) == []
    [(task, reason)] = c.scheduler.overdue(12.01, c.table, live, judge_lost=False)
    assert (task.id, reason) == (1, "timeout after 2s")
    assert c.scheduler.overdue(20.0, c.table, live, judge_lost=True) == []


def test_an_attempt_started_at_time_zero_still_times_out() -> None:
    c = Cluster()
    c.submit(echo(timeout=1.0))
    c.run([W1], wall=0.0)
    assert [t.id for t, _ in c.scheduler.overdue(5.0, c.table, {1: 1}, judge_lost=True)] == [1]


def test_an_attempt_on_a_lost_worker_is_failed_only_when_judging_lost() -> None:
    c = Cluster()
    c.submit(echo(), echo())
    c.run([W1, W2])
    live = {1: 1}  # worker 2 is gone
    assert c.scheduler.overdue(5.0, c.table, live, judge_lost=False) == []
    [(task, reason)] = c.scheduler.overdue(5.0, c.table, live, judge_lost=True)
    assert (task.id, reason) == (2, "worker 2 lost")
    assert c.scheduler.overdue(6.0, c.table, live, judge_lost=True) == []


def test_an_attempt_on_a_restarted_worker_is_failed_only_when_judging_lost() -> None:
    c = Cluster()
    c.submit(echo(), echo())
    c.run([W1, W2])
    live = {1: 1, 2: 2}  # worker 2 came back with a new incarnation
    assert c.scheduler.overdue(5.0, c.table, live, judge_lost=False) == []
    [(task, reason)] = c.scheduler.overdue(5.0, c.table, live, judge_lost=True)
    assert (task.id, reason) == (2, "worker 2 restarted")


def test_an_attempt_on_a_live_worker_within_its_timeout_is_left_alone() -> None:
    c = Cluster()
    c.submit(echo(timeout=10.0), echo())
    c.run([W1, W2], wall=1.0)
    assert c.scheduler.overdue(5.0, c.table, {1: 1, 2: 1}, judge_lost=True) == []


def test_an_attempt_whose_result_was_reported_is_not_failed_as_overdue() -> None:
    c = Cluster()
    c.submit(echo(timeout=1.0))
    c.run([W1], wall=1.0)
    assert c.scheduler.reported(1, 1, 1)
    assert c.scheduler.overdue(9.0, c.table, {}, judge_lost=True) == []


def test_an_overdue_attempt_frees_its_slot_once_the_failure_is_applied() -> None:
    c = Cluster(slots=1)
    c.submit(echo(timeout=1.0), echo())
    c.run([W1], wall=1.0)
    [(task, reason)] = c.scheduler.overdue(3.0, c.table, {1: 1}, judge_lost=True)
    retry_at = c.scheduler.retry_at(3.0, task.attempt)
    c.apply({"op": "finish", "at": 3.0, "items": [[1, 1, False, reason, retry_at]]})
    assert c.table.tasks[1].state == "scheduled"
    assert tasks_of(c.run([W1], wall=3.0)) == [2]


# --------------------------------------------------------------------- retries


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5])
def test_retry_at_grows_exponentially_with_jitter_in_half_to_full_backoff(attempt: int) -> None:
    rng = random.Random(attempt)
    scheduler = Scheduler("fifo", 1, rng, retry_base=0.5, retry_max=1000.0)
    backoff = 0.5 * 2 ** (attempt - 1)
    delays = [scheduler.retry_at(100.0, attempt) - 100.0 for _ in range(500)]
    assert all(0.5 * backoff <= d <= backoff for d in delays)
    assert min(delays) < 0.6 * backoff and max(delays) > 0.9 * backoff  # jitter spreads


def test_retry_at_bounds_are_exact() -> None:
    low = Scheduler("fifo", 1, FixedRandom(0.0), retry_base=0.5, retry_max=30.0)
    high = Scheduler("fifo", 1, FixedRandom(1.0), retry_base=0.5, retry_max=30.0)
    assert [low.retry_at(0.0, a) for a in (1, 2, 3)] == [0.25, 0.5, 1.0]
    assert [high.retry_at(0.0, a) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]


def test_retry_at_is_capped_by_retry_max() -> None:
    scheduler = Scheduler("fifo", 1, random.Random(3), retry_base=0.5, retry_max=4.0)
    delays = [scheduler.retry_at(0.0, attempt) for attempt in range(4, 60) for _ in range(20)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    top = Scheduler("fifo", 1, FixedRandom(1.0), retry_base=0.5, retry_max=4.0)
    assert top.retry_at(0.0, 100) == 4.0


# ------------------------------------------------------------------ idle leader


def test_an_idle_leader_has_no_round_to_run_until_work_arrives() -> None:
    c = Cluster()
    dispatcher = Dispatcher(9, 1, c.scheduler)

    def needed(wall: float = 0.0, judging: bool = True) -> bool:
        return dispatcher.needs_round(wall, c.table, judging)[0]

    assert not needed()
    (task,) = c.submit(echo())
    assert needed(judging=False)  # queued
    c.run([W1])
    assert needed()  # running on a worker: timeouts and losses to watch, on ticks
    assert not needed(judging=False)
    c.finish(task)
    assert not needed()
    c.submit(echo(delay=5.0))
    assert not needed() and needed(wall=1e10)  # waiting for its time


def test_tasks_cancelled_then_forgotten_while_in_the_heaps_are_skipped() -> None:
    c = Cluster()
    queued, parked, kept = c.submit(echo(), echo(delay=5.0), echo())
    assert c.plan([], wall=1.0) == []  # no worker: queued and kept move to the ready heap
    for task_id in (queued, parked):  # (parked still waits for its time)
        c.apply({"op": "cancel", "at": 0.5, "id": task_id})
    c.apply({"op": "forget", "at": 0.6, "ids": [queued, parked], "keys_before": 0.0})
    assert c.table.get(queued) is None and c.table.get(parked) is None
    assert tasks_of(c.plan([W1], wall=10.0)) == [kept]  # no lookup of what is gone
