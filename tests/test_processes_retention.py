"""Ring 3: retention on real peers. With `keep_finished` short, tasks that ran are
trimmed and then forgotten by every peer alike; a forgotten task's key still answers
(the same id, state `forgotten`, nothing run again); a forgotten id is 404 saying so;
unfinished tasks are kept; and a restarted peer forgets the same tasks from its log."""

from __future__ import annotations

import json
from typing import Any

from tests.chaos import START_TIMEOUT, request_once
from tests.conftest import ClusterFactory
from tests.harness import Cluster

WAIT = 20.0


def _post(cluster: Cluster, n: int, path: str, body: Any) -> tuple[int, Any]:
    status, raw = request_once(cluster, n, "POST", path, json.dumps(body).encode())
    return status, json.loads(raw)


def _counts(cluster: Cluster, n: int) -> dict[str, int]:
    view = cluster.view(n)
    return dict(view["tasks"]) if view else {}


def test_finished_tasks_are_trimmed_then_forgotten_alike_on_every_peer(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3, keep_finished=0.5, keep_trimmed=0.5, keep_keys=600.0)
    cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    specs = [{"kind": "echo", "args": {"n": i}, "key": f"job-{i}"} for i in range(40)]
    parked = {"kind": "echo", "key": "later", "delay": 3600}
    status, body = _post(cluster, 2, "/tasks/batch", {"tasks": [*specs, parked]})
    assert status == 201, body
    ids = [t["id"] for t in body["tasks"]]

    def trimmed_somewhere() -> bool:
        status, raw = request_once(cluster, 1, "GET", f"/tasks/{ids[0]}")
        return status == 200 and json.loads(raw)["trimmed"]

    cluster.wait_for(trimmed_somewhere, WAIT, "the first task to be trimmed")
    task = json.loads(request_once(cluster, 1, "GET", f"/tasks/{ids[0]}")[1])
    assert task["state"] == "succeeded" and task["args"] is None and task["result"] is None

    def forgotten_everywhere() -> bool:
        return all(_counts(cluster, n).get("forgotten") == 40 for n in cluster.ids)

    cluster.wait_for(forgotten_everywhere, WAIT, "every peer to forget the 40 tasks")
    for n in cluster.ids:
        counts = _counts(cluster, n)
        assert counts["succeeded"] == 0 and counts["scheduled"] == 1, (n, counts)
        status, raw = request_once(cluster, n, "GET", f"/tasks/{ids[5]}")
        assert status == 404 and b"forgotten" in raw, (n, raw)
        status, raw = request_once(cluster, n, "GET", f"/tasks/{ids[-1]}")
        assert status == 200 and json.loads(raw)["state"] == "scheduled"

    status, again = _post(cluster, 1, "/tasks", specs[7])  # a late client retry
    assert status == 200 and again["id"] == ids[7] and again["state"] == "forgotten", again
    assert all(_counts(cluster, n).get("queued", 0) == 0 for n in cluster.ids)

    cluster.restart(1)  # replays its log: trims and forgets the same tasks again
    cluster.wait_for(
        lambda: _counts(cluster, 1).get("forgotten") == 40, WAIT, "peer 1 after its restart"
    )
    assert request_once(cluster, 1, "GET", f"/tasks/{ids[0]}")[0] == 404
