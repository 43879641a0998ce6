"""Ring 2 for execution: the peers of a simulated cluster run the tasks they are assigned
(`echo` succeeds, `fail` fails) while peers crash, restart and are partitioned, and
messages are lost, duplicated and reordered. A crashed peer loses its running attempts;
the leader must notice (lost or restarted worker, or a timeout) and retry them.

Checked every step: no attempt of a task is recorded with two different outcomes, and no
peer's table holds a task past its `max_attempts`. At the end, after healing and
restarting every peer: within a bound every task is terminal on every peer, all peers
agree on each task, `echo` tasks succeeded with their args and attempt as result (unless every one
of their attempts was lost to faults or timed out), `fail` tasks failed after exactly
`max_attempts` attempts, and every attempt of every task was recorded exactly once.
`SIM_SEED=N` replays one seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from peer.protocol.records import TERMINAL
from peer.protocol.settings import Settings
from tests.sim.cluster import SimCluster
from tests.sim.network import Faults
from tests.sim.schedule import (
    random_cluster_options,
    random_faults,
    random_snapshots,
    run_random_faults,
    seeds,
)

SETTLE = 20.0  # virtual seconds allowed to finish every task after healing
LOSS_REASONS = ("lost", "restarted", "timeout")  # failures the leader judges


def _task_maker(rng: random.Random) -> Callable[[int], dict[str, Any]]:
    """Proposal n: about a third `fail` (1 to 3 attempts), the rest `echo` (3 attempts, a
    quarter of them with a timeout some attempts overrun); two queues."""

    def make(n: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"queue": f"q{n % 2}", "priority": n % 3}
        if rng.random() < 0.35:
            spec.update(kind="fail", args={"message": f"boom {n}"}, max_attempts=1 + n % 3)
        else:
            spec.update(kind="echo", args={"n": n}, max_attempts=3)
            if rng.random() < 0.25:  # runs 0.01-0.3 s: some attempts time out
                spec["timeout"] = 0.25
        return spec

    return make


def _settled(sim: SimCluster) -> bool:
    """Every peer has applied the whole log, holds every acked task (or its key, when
    retention forgot it), all terminal."""
    nodes = list(sim.nodes.values())
    last = max(n.log.last_index for n in nodes)
    return all(
        n.tasks.applied_index == last
        and all(n.tasks.key_holder(k) is not None for k in sim.acked)
        and all(t.state in TERMINAL for t in n.tasks.tasks.values())
        for n in nodes
    )


def _check_final(sim: SimCluster) -> int:
    """The end state every peer must agree on; returns how many tasks were checked."""
    tables = {
        i: {t: task.to_json() for t, task in n.tasks.tasks.items()} for i, n in sim.nodes.items()
    }
    first_id, first = next(iter(tables.items()))
    for node_id, table in tables.items():
        assert table == first, f"peers {first_id} and {node_id} disagree on the tasks"
    forgotten = {i: (n.tasks.forgotten, dict(n.tasks.forgotten_keys)) for i, n in sim.nodes.items()}
    assert len(set(map(repr, forgotten.values()))) == 1, f"peers forgot differently: {forgotten}"
    for task in first.values():
        if not task["trimmed"]:  # (a trimmed task's args and result are gone)
            _check_task(sim, task)
    return len(first)


def _check_task(sim: SimCluster, task: dict[str, Any]) -> None:
    where = f"task {task['id']} ({task['kind']}, {task['state']}, attempt {task['attempt']})"
    outcomes = [sim.outcomes.get((task["id"], a)) for a in range(1, task["attempt"] + 1)]
    assert None not in outcomes, f"{where}: an attempt ended without a recorded finish"
    assert (task["id"], task["attempt"] + 1) not in sim.outcomes, f"{where}: a later attempt"
    assert all(not ok for ok, _ in outcomes[:-1]), f"{where}: retried after a success"
    if task["kind"] == "fail":
        assert task["state"] == "failed", where
        assert task["attempt"] == task["max_attempts"], where
        assert task["error"] == outcomes[-1][1], where
    elif task["state"] == "succeeded":
        produced = [task["args"], task["attempt"]]  # the simulator's echo: [args, attempt]
        assert outcomes[-1] == (True, produced) and task["result"] == produced, where
    else:
        assert task["state"] == "failed" and task["attempt"] == task["max_attempts"], where
        reasons = [value for _, value in outcomes]
        assert all(any(r in v for r in LOSS_REASONS) for v in reasons), f"{where}: {reasons}"


@pytest.mark.parametrize("seed", seeds())
def test_every_task_ends_once_and_alike_on_every_peer_under_random_faults(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([3, 3, 5])
    policy = rng.choice(["fifo", "priority", "fair"])
    snapshots = random_snapshots(seed)
    settings = Settings(policy=policy, slots=2, retry_base=0.05, retry_max=0.2, **snapshots)
    lazy = rng.random() < 0.8  # as the driver ticks; else every step
    options = random_cluster_options(rng)
    sim = SimCluster(size, seed, random_faults(rng), settings, True, lazy, **options)
    sim.make_task = _task_maker(rng)
    history = [f"size {size}, policy {policy}, faults {sim.net.faults}, lazy {lazy}, {snapshots}"]
    try:
        run_random_faults(sim, rng, history, (2, 6), propose_rate=0.08)
        history.append(f"t={sim.now:.2f} heal, restart all; proposals {sim.proposals}")
        assert sim.run_until(lambda: _settled(sim), SETTLE), "tasks left unfinished"
        _check_final(sim)
    except AssertionError as exc:
        pytest.fail(f"seed {seed} (replay: SIM_SEED={seed}): {exc}\n  " + "\n  ".join(history))


@pytest.mark.parametrize("seed", seeds()[::4])
def test_retention_forgets_the_same_tasks_on_every_peer_under_random_faults(seed: int) -> None:
    rng = random.Random(seed)
    settings = Settings(
        slots=2,
        retry_base=0.05,
        retry_max=0.2,
        keep_finished=rng.choice([0.1, 0.5, 2.0]),
        keep_trimmed=rng.choice([None, 0.2]),
        max_finished=rng.choice([None, 3, 10]),
        keep_keys=rng.choice([30.0, 600.0]),  # (beyond the run: every acked key answers)
        max_forget=rng.choice([2, 50]),
        **random_snapshots(seed),
    )
    sim = SimCluster(3, seed, random_faults(rng), settings, True, True)
    sim.make_task = _task_maker(rng)
    history = [f"retention {settings}, faults {sim.net.faults}"]
    try:
        run_random_faults(sim, rng, history, (2, 5), propose_rate=0.08)
        history.append(f"t={sim.now:.2f} heal, restart all; proposals {sim.proposals}")
        assert sim.run_until(lambda: _settled(sim), SETTLE), "tasks left unfinished"
        forgotten = sim.run_until(lambda: _settled(sim) and _forgot_what_is_due(sim), SETTLE)
        assert forgotten, "retention left due tasks behind"
        _check_final(sim)
    except AssertionError as exc:
        pytest.fail(f"seed {seed} (replay: SIM_SEED={seed}): {exc}\n  " + "\n  ".join(history))


def _forgot_what_is_due(sim: SimCluster) -> bool:
    """No peer holds more finished tasks per queue than `max_finished`, nor one that
    ended over `keep_finished` + `keep_trimmed` ago (+ slack for ticks and clock skew)."""
    settings = sim.settings
    keep = (settings.keep_finished or 0.0) + (settings.keep_trimmed or settings.keep_finished or 0)
    for node in sim.nodes.values():
        held: dict[str, int] = {}
        for task in node.tasks.tasks.values():
            held[task.queue] = held.get(task.queue, 0) + 1
            if (task.finished_at or 0.0) + keep + 1.5 < sim.now:
                return False
        if (
            settings.max_finished is not None
            and max(held.values(), default=0) > settings.max_finished
        ):
            return False
    return True


def test_echo_and_fail_tasks_run_to_their_end_without_faults() -> None:
    sim = SimCluster(3, seed=5, settings=Settings(retry_base=0.05, retry_max=0.2), execute=True)
    sim.make_task = lambda n: (
        {"kind": "echo", "args": [n]} if n % 2 else {"kind": "fail", "max_attempts": 3}
    )
    assert sim.run_until(lambda: any(n.is_ready_leader for n in sim.nodes.values()), 3.0)
    for _ in range(20):
        sim.propose()
        sim.step()
    assert sim.run_until(lambda: len(sim.acked) == 20 and _settled(sim), 10.0)
    assert _check_final(sim) == 20
    tasks = next(iter(sim.nodes.values())).tasks.tasks.values()
    assert {t.state for t in tasks if t.kind == "echo"} == {"succeeded"}
    assert all(t.attempt == 1 for t in tasks if t.kind == "echo")
    assert {(t.state, t.attempt, t.error) for t in tasks if t.kind == "fail"} == {
        ("failed", 3, "failed")
    }
    assert {t.worker for t in tasks} == set(sim.ids)  # round-robin reached every peer
    settings = sim.settings
    assert max(sim.peak_work.values()) <= settings.slots * settings.prefetch


def _ops(sim: SimCluster) -> dict[str, int]:
    """How many committed entries of each op the log holds (placed submits apart)."""
    ops: dict[str, int] = {}
    for entry in sim.committed.values():
        data = orjson.loads(entry.command)
        op = "placed submit" if data.get("place") else data["op"]
        ops[op] = ops.get(op, 0) + 1
    return ops


def test_a_task_submitted_to_an_idle_cluster_starts_in_its_submit_entry() -> None:
    sim = SimCluster(3, seed=8, execute=True)
    assert sim.run_until(lambda: any(n.is_ready_leader for n in sim.nodes.values()), 3.0)
    for n in range(10):  # one at a time: each finds the cluster idle
        sim.propose()
        assert sim.run_until(lambda n=n: len(sim.acked) == n + 1 and _settled(sim), 5.0)
    assert _check_final(sim) == 10
    ops = _ops(sim)
    assert ops.get("placed submit") == 10 and "assign" not in ops, ops


def test_a_burst_bigger_than_the_slots_is_placed_then_assigned_never_over_the_slots() -> None:
    settings = Settings(slots=1, prefetch=1)
    sim = SimCluster(3, seed=9, settings=settings, execute=True)
    assert sim.run_until(lambda: any(n.is_ready_leader for n in sim.nodes.values()), 3.0)
    for _ in range(30):  # all at once: the first fill the free slots, the rest queue
        sim.propose()
    assert sim.run_until(lambda: len(sim.acked) == 30 and _settled(sim), 20.0)
    assert _check_final(sim) == 30
    ops = _ops(sim)
    assert ops.get("placed submit", 0) >= 1 and ops.get("assign", 0) >= 1, ops
    assert max(sim.peak_work.values()) == 1  # one slot each, placed or assigned


def test_a_crashed_workers_attempt_is_retried_elsewhere() -> None:
    sim = SimCluster(3, seed=6, settings=Settings(retry_base=0.05, retry_max=0.2), execute=True)
    assert sim.run_until(lambda: any(n.is_ready_leader for n in sim.nodes.values()), 3.0)
    [leader] = [i for i, n in sim.nodes.items() if n.is_ready_leader]
    victim = next(i for i in sim.ids if i != leader)
    sim.work.setdefault(victim, {})
    for _ in range(6):
        sim.propose()
    assert sim.run_until(lambda: bool(sim.work.get(victim)), 2.0)
    lost = [task for task, _ in sim.work[victim]]
    sim.crash(victim)
    assert sim.run_until(lambda: _settled(sim) and len(sim.acked) == 6, 10.0)
    table = sim.nodes[leader].tasks
    for task_id in lost:
        task = table.tasks[task_id]
        assert (task.state, task.attempt) == ("succeeded", 2)
        assert task.worker != victim
        assert sim.outcomes[(task_id, 1)] == (False, f"worker {victim} lost")


def test_an_attempt_on_a_worker_suspect_for_a_moment_is_not_failed() -> None:
    """The scheduler's rule: an attempt without a report fails when its worker is dead or
    restarted. A worker silent for longer than `suspect_after` but shorter than
    `failure_timeout` is suspect: it gets no new work, but its running attempt stands."""
    settings = Settings(retry_base=0.05, retry_max=0.2)
    sim = SimCluster(3, seed=7, settings=settings, execute=True)
    sim.make_task = lambda n: {"kind": "sleep", "args": {"seconds": 1.5}}
    assert sim.run_until(lambda: any(n.is_ready_leader for n in sim.nodes.values()), 3.0)
    sim.run(settings.failure_timeout + 0.1)  # the leader now judges lost workers
    [leader] = [i for i, n in sim.nodes.items() if n.is_ready_leader]
    worker = next(i for i in sim.ids if i != leader)
    for _ in range(3):
        sim.propose()
    assert sim.run_until(lambda: bool(sim.work.get(worker)), 1.0)
    [(task_id, attempt)] = list(sim.work[worker])
    sim.net.cut |= {(worker, other) for other in sim.ids if other != worker}  # it goes quiet
    seen = set()

    def watch() -> bool:
        seen.add(sim.nodes[leader].membership.status(worker, sim.now).value)
        return _settled(sim) and len(sim.acked) == 3

    # a 0.29 s cut; with up to a heartbeat before its next gossip, the worker is silent
    # past suspect_after (0.3 s) yet short of failure_timeout (0.5 s)
    for _ in range(29):
        sim.step()
        watch()
    sim.net.heal()
    assert sim.run_until(watch, 5.0)
    assert seen == {"alive", "suspect"}  # the premise: suspect for a while, never dead
    task = sim.nodes[leader].tasks.tasks[task_id]
    assert sim.outcomes.get((task_id, attempt)) == (True, {"slept": 1.5})
    assert (task.state, task.attempt, task.worker) == ("succeeded", attempt, worker)


def _assigned(sim: SimCluster) -> bool:
    leader = sim.nodes[max(sim.ids)]
    return any(t.state not in ("queued", "scheduled") for t in leader.tasks.tasks.values())


def test_a_submitted_task_is_assigned_within_a_few_round_trips_of_a_quiet_cluster() -> None:
    # the driver ticks an idle leader once a heartbeat; the wall clock that decides which
    # tasks are due must still be the cycle's, or a new task waits for the next tick
    for seed in range(3):
        sim = SimCluster(5, seed, Faults(max_delay=0.01), execute=True)
        assert sim.run_until(sim.agreed_on_highest, 5.0)
        sim.run(1.0)
        sim.propose()
        start = sim.now
        assert sim.run_until(lambda s=sim: _assigned(s), 1.0)  # type: ignore[misc]
        assert sim.now - start <= 0.06, (seed, sim.now - start)


def test_a_delayed_task_is_assigned_when_it_falls_due_not_a_heartbeat_later() -> None:
    for seed in range(3):
        sim = SimCluster(5, seed, Faults(max_delay=0.01), execute=True)
        assert sim.run_until(sim.agreed_on_highest, 5.0)
        sim.run(1.0)
        sim.make_task = lambda n: {"kind": "echo", "args": n, "delay": 0.355}
        sim.propose()
        start = sim.now
        assert sim.run_until(lambda s=sim: _assigned(s), 2.0)  # type: ignore[misc]
        assert 0.355 <= sim.now - start <= 0.355 + 0.05, (seed, sim.now - start)


class _WatchedWorkers(SimCluster):
    """Checks, at every attempt a peer starts holding, the rule of earned prefetch:
    nothing more joins a peer that holds a long attempt (`sleep` here) and its slots'
    worth; and notes how many short attempts a peer held at most beyond its slots."""

    deepest = 0

    def _run_work(self, node_id: int, batch: Any) -> None:
        work = self.work.setdefault(node_id, {})
        for key in batch.stops:
            work.pop(key, None)
        slots = self.settings.slots
        for task in batch.starts:
            held = [t for t, _ in work]
            kinds = {self.nodes[node_id].tasks.tasks[t].kind for t in held}
            assert "sleep" not in kinds or len(held) < slots, (node_id, held, task.id)
            if "sleep" not in kinds:
                self.deepest = max(self.deepest, len(held) + 1)
            super()._run_work(node_id, _Starting(task))


class _Starting:
    """One start, as a batch carrying only it."""

    def __init__(self, task: Any) -> None:
        self.starts, self.stops = [task], []


def test_nothing_queues_behind_a_long_attempt_while_short_ones_are_prefetched() -> None:
    settings = Settings(slots=2, prefetch=4, prefetch_below=0.5)  # (echo runs 0.01-0.3 s)
    sim = _WatchedWorkers(3, seed=11, settings=settings, execute=True)
    sim.make_task = lambda n: (
        {"kind": "sleep", "args": {"seconds": 2.0}} if n % 6 == 0 else {"kind": "echo", "args": n}
    )
    assert sim.run_until(lambda: any(n.is_ready_leader for n in sim.nodes.values()), 3.0)
    for _ in range(90):
        sim.propose()
        sim.step()
    assert sim.run_until(lambda: len(sim.acked) == 90 and _settled(sim), 30.0)
    for node in sim.nodes.values():
        assert {t.state for t in node.tasks.tasks.values()} == {"succeeded"}
        assert all(t.attempt == 1 for t in node.tasks.tasks.values())
    assert sim.deepest > settings.slots  # short ones were prefetched meanwhile
    assert max(sim.peak_work.values()) <= settings.slots * settings.prefetch
