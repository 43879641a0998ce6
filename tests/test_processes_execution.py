"""Ring 3: task execution on real peer processes, observed only over the public HTTP API.

A worker SIGKILLed mid-task has its attempt rerun on another peer; a failing task is
retried with backoff until `max_attempts`; a task past its `timeout` is failed and
retried; dependencies hold back and cancel their dependents; cancelling a running task
stops it on its worker. Chaos: clients submit keyed `echo` tasks to random peers while
the leader is SIGKILLed twice; afterwards every acknowledged task has succeeded, exactly
once, on every peer (the clients and the common part of the run are in `tests/chaos.py`).
`GET /tasks/{id}?wait=S` long-polls for the end of a task.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests import chaos
from tests.chaos import REQUEST_TIMEOUT, START_TIMEOUT, Json, request_once
from tests.conftest import ClusterFactory
from tests.harness import Cluster

LONG_POLL = 5.0  # seconds of one `?wait=` request
SLACK = 6.0  # added to every computed bound: scheduling noise on a busy 2-core box
# The leader writes the wall clock of its latest driver tick (every heartbeat / 5) into
# `assign` and `finish` entries, so started_at / finished_at may lag by up to one tick;
# submitted_at is read when the submit is proposed.
TICK_SLACK = 0.03


# ---------------------------------------------------------------------------- HTTP


def _http(
    cluster: Cluster,
    n: int,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = REQUEST_TIMEOUT,
) -> tuple[int, Any]:
    """One request on a fresh connection; the status and the decoded JSON body."""
    data = None if body is None else json.dumps(body).encode()
    status, raw = request_once(cluster, n, method, path, data, timeout)
    return status, json.loads(raw) if raw else None


def _submit(cluster: Cluster, n: int, spec: Json) -> Json:
    status, task = _http(cluster, n, "POST", "/tasks", spec)
    assert status == 201, f"POST /tasks {spec} at peer {n} -> {status} {task}"
    return task


def _submit_batch(cluster: Cluster, n: int, specs: list[Json]) -> list[Json]:
    status, body = _http(cluster, n, "POST", "/tasks/batch", {"tasks": specs})
    assert status == 201, f"POST /tasks/batch at peer {n} -> {status} {body}"
    return body["tasks"]


def _get(cluster: Cluster, n: int, task_id: int) -> Json:
    status, task = _http(cluster, n, "GET", f"/tasks/{task_id}")
    assert status == 200, f"GET /tasks/{task_id} at peer {n} -> {status} {task}"
    return task


def _wait_terminal(cluster: Cluster, n: int, task_id: int, timeout: float) -> Json:
    """Long-poll peer `n` until task `task_id` is terminal there; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    task: Json | None = None
    while (left := deadline - time.monotonic()) > 0:
        wait = min(LONG_POLL, max(0.05, left))
        status, task = _http(
            cluster, n, "GET", f"/tasks/{task_id}?wait={wait:.2f}", timeout=wait + REQUEST_TIMEOUT
        )
        assert status == 200, f"GET /tasks/{task_id} at peer {n} -> {status} {task}"
        if task["state"] in ("succeeded", "failed", "cancelled"):
            return task
    raise AssertionError(
        f"task {task_id} not terminal at peer {n} after {timeout:.1f}s: {task}\n"
        + cluster.describe()
    )


def _all_alive(cluster: Cluster, leader: int) -> None:
    """Wait until the leader sees every running peer alive (so each is a worker)."""

    def alive() -> bool:
        view = cluster.view(leader)
        if view is None:
            return False
        status = {m["id"]: m["status"] for m in view["members"]}
        return all(status.get(n) == "alive" for n in cluster.running_ids())

    cluster.wait_for(alive, START_TIMEOUT, f"leader {leader} to see every peer alive")


def _running_here(cluster: Cluster, n: int) -> int | None:
    view = cluster.view(n)
    return None if view is None else view["running"]


def _start(cluster_factory: ClusterFactory, size: int = 3, **overrides: Any) -> tuple[Cluster, int]:
    cluster = cluster_factory(size, **overrides)
    # The settled leader: at a cold start a lower peer may lead for a moment before the
    # highest one takes over, and a write forwarded across that change can take up to
    # submit_wait and end in 503 (these tests are about execution, not submission).
    leader = cluster.wait_for_leader(max(cluster.ids), timeout=START_TIMEOUT)
    _all_alive(cluster, leader)
    return cluster, leader


# ------------------------------------------------------------------ single tasks


def test_sigkill_of_a_worker_mid_task_reruns_the_task_on_another_peer(
    cluster_factory: ClusterFactory,
) -> None:
    sleep = 3.0
    cluster, leader = _start(cluster_factory, 3, retry_base=0.1, retry_max=0.5)
    follower = min(n for n in cluster.ids if n != leader)
    specs = [{"kind": "sleep", "args": {"seconds": sleep}} for _ in cluster.ids]
    ids = [t["id"] for t in _submit_batch(cluster, follower, specs)]

    def started_on_a_follower() -> Json | None:
        """A task running on a peer other than the leader that has really started it."""
        for task_id in ids:
            task = _get(cluster, leader, task_id)
            worker = task["worker"]
            if task["state"] == "running" and worker != leader and _running_here(cluster, worker):
                return task
        return None

    victim = cluster.wait_for(started_on_a_follower, sleep, "a sleep task running on a follower")
    killed = victim["worker"]
    killed_at = time.time()
    cluster.kill(killed)

    config = cluster.config
    bound = 2 * config.failure_timeout + config.retry_max + sleep + SLACK
    task = _wait_terminal(cluster, leader, victim["id"], bound)
    assert task["state"] == "succeeded", task
    assert task["attempt"] >= victim["attempt"] + 1 >= 2, task
    assert task["worker"] != killed and task["worker"] in cluster.running_ids(), task
    assert task["result"] == {"slept": sleep}, task
    assert task["error"] is None, task
    assert task["started_at"] >= killed_at - TICK_SLACK, (killed_at, task)  # a fresh attempt
    assert task["finished_at"] - task["started_at"] >= sleep - TICK_SLACK, task

    # The tasks on the surviving peers were not disturbed: one attempt each.
    for task_id in ids:
        if task_id == victim["id"]:
            continue
        other = _wait_terminal(cluster, leader, task_id, sleep + SLACK)
        assert other["state"] == "succeeded" and other["attempt"] == 1, other
        assert other["worker"] != killed, other

    # Every surviving peer agrees on the rerun task.
    for n in cluster.running_ids():
        assert _wait_terminal(cluster, n, victim["id"], SLACK) == task


def test_a_failing_task_is_retried_with_backoff_until_max_attempts(
    cluster_factory: ClusterFactory,
) -> None:
    base = 0.2  # attempt k backs off base * 2**(k-1) * [0.5, 1): >= 0.1 s, then >= 0.2 s
    cluster, leader = _start(cluster_factory, 3, retry_base=base, retry_max=0.5)
    follower = min(n for n in cluster.ids if n != leader)
    spec = {"kind": "fail", "args": {"message": "boom on purpose"}, "max_attempts": 3}
    task_id = _submit(cluster, follower, spec)["id"]

    task = _wait_terminal(cluster, follower, task_id, 3 * 0.5 + SLACK)
    assert task["state"] == "failed", task
    assert task["attempt"] == 3 and task["max_attempts"] == 3, task
    assert task["error"] == "boom on purpose", task
    assert task["result"] is None, task
    minimal_backoff = base * 0.5 + 2 * base * 0.5  # 0.1 + 0.2
    took = task["finished_at"] - task["submitted_at"]
    assert took >= minimal_backoff - TICK_SLACK, f"3 attempts took {took:.3f}s: {task}"
    assert _get(cluster, leader, task_id) == task


def test_a_task_past_its_timeout_is_failed_and_retried(cluster_factory: ClusterFactory) -> None:
    cluster, leader = _start(cluster_factory, 3)
    follower = min(n for n in cluster.ids if n != leader)
    spec = {"kind": "sleep", "args": {"seconds": 5}, "timeout": 0.5, "max_attempts": 2}
    task_id = _submit(cluster, follower, spec)["id"]

    bound = 2 * 0.5 + cluster.config.retry_base + SLACK
    task = _wait_terminal(cluster, follower, task_id, bound)
    assert task["state"] == "failed", task
    assert task["attempt"] == 2, task
    assert task["error"].startswith("timeout"), task
    took = task["finished_at"] - task["submitted_at"]
    assert 2 * 0.5 <= took < 5, f"two attempts of 0.5 s took {took:.3f}s: {task}"
    # Neither attempt keeps running anywhere.
    cluster.wait_for(
        lambda: all(_running_here(cluster, n) == 0 for n in cluster.ids),
        SLACK,
        "every peer to run nothing",
    )


def test_dependencies_run_in_order_and_a_failed_dependency_cancels_its_dependents(
    cluster_factory: ClusterFactory,
) -> None:
    cluster, leader = _start(cluster_factory, 3)
    follower = min(n for n in cluster.ids if n != leader)

    a, b = _submit_batch(
        cluster,
        follower,
        [
            {"kind": "echo", "args": {"step": "a"}, "ref": "a"},
            {"kind": "echo", "args": {"step": "b"}, "ref": "b", "after": ["a"]},
        ],
    )
    assert b["depends_on"] == [a["id"]] and b["state"] == "blocked", b
    b = _wait_terminal(cluster, follower, b["id"], SLACK)
    a = _wait_terminal(cluster, follower, a["id"], SLACK)
    assert a["state"] == b["state"] == "succeeded", (a, b)
    assert a["result"] == {"step": "a"} and b["result"] == {"step": "b"}, (a, b)
    assert b["started_at"] >= a["finished_at"], (a, b)

    a, b = _submit_batch(
        cluster,
        follower,
        [
            {"kind": "fail", "args": {"message": "a fails"}, "max_attempts": 1, "ref": "a"},
            {"kind": "echo", "args": {"step": "b"}, "after": ["a"]},
        ],
    )
    a = _wait_terminal(cluster, follower, a["id"], SLACK)
    b = _wait_terminal(cluster, follower, b["id"], SLACK)
    assert a["state"] == "failed" and a["attempt"] == 1 and a["error"] == "a fails", a
    assert b["state"] == "cancelled", b
    assert f"dependency {a['id']}" in b["error"], b
    assert b["attempt"] == 0 and b["started_at"] is None, b  # it never ran
    for n in cluster.ids:
        assert _wait_terminal(cluster, n, b["id"], SLACK) == b


def test_cancelling_a_running_task_stops_it_on_its_worker(
    cluster_factory: ClusterFactory,
) -> None:
    cluster, leader = _start(cluster_factory, 3)
    follower = min(n for n in cluster.ids if n != leader)
    task_id = _submit(cluster, follower, {"kind": "sleep", "args": {"seconds": 30}})["id"]

    def started() -> Json | None:
        task = _get(cluster, leader, task_id)
        if task["state"] == "running" and _running_here(cluster, task["worker"]) == 1:
            return task
        return None

    worker = cluster.wait_for(started, SLACK, "the sleep task to run on its worker")["worker"]
    canceller = next((n for n in cluster.ids if n not in (leader, worker)), follower)
    status, body = _http(cluster, canceller, "POST", f"/tasks/{task_id}/cancel")
    assert status == 200 and body["state"] == "cancelled", (status, body)

    cluster.wait_for(
        lambda: _running_here(cluster, worker) == 0, SLACK, f"peer {worker} to stop the task"
    )
    for n in cluster.ids:
        task = _wait_terminal(cluster, n, task_id, SLACK)
        assert task["state"] == "cancelled" and task["error"] == "cancelled", task
        assert task["result"] is None and task["finished_at"] is not None, task
    status, body = _http(cluster, follower, "POST", f"/tasks/{task_id}/cancel")
    assert status == 409, (status, body)
    time.sleep(3 * cluster.config.heartbeat_interval)  # a late result must not revive it
    assert _get(cluster, leader, task_id)["state"] == "cancelled"


# ------------------------------------------------------------------------ chaos

RUN_ALL_TIMEOUT = 30.0  # every peer has run and recorded every task once the load stops
LOAD = chaos.Load("exec", clients=6, pace=20.0, phase_seconds=3.0, phase_acks=30, min_acked=100)


def _all_succeeded(cluster: Cluster) -> dict[int, int] | None:
    """Every peer answers, holds the same number of tasks, and all have succeeded."""
    totals = {}
    for n, view in cluster.views().items():
        if view is None:
            return None
        counts = view["tasks"]
        if sum(counts.values()) != counts["succeeded"]:
            return None
        totals[n] = counts["succeeded"]
    return totals if len(set(totals.values())) == 1 else None


def test_chaos_every_acknowledged_task_succeeds_exactly_once_across_leader_crashes(
    cluster_factory: ClusterFactory,
) -> None:
    cluster, _ = _start(cluster_factory, 5)
    ledger = chaos.run_chaos(cluster, LOAD).ledger

    cluster.wait_for(
        lambda: _all_succeeded(cluster), RUN_ALL_TIMEOUT, "every task to succeed on every peer"
    )
    assert cluster.running_ids() == list(cluster.ids), "a peer exited by itself"
    reference: dict[int, Json] | None = None
    for n in cluster.ids:
        tasks = chaos.list_all(cluster, n)
        chaos.check_listing(n, tasks, ledger.acked)
        for t in tasks:
            args = chaos.submitted_args(t["key"])
            assert t["state"] == "succeeded", f"peer {n}: {t}"
            assert t["args"] == t["result"] == args, f"peer {n}: {t}"
            assert 1 <= t["attempt"] <= t["max_attempts"], f"peer {n}: {t}"
        table = {t["id"]: t for t in tasks}
        if reference is None:
            reference = table
        assert table == reference, f"peer {n} disagrees with peer {cluster.ids[0]}"
