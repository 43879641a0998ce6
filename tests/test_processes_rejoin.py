"""Ring 3: a peer whose data directory is wiped (a replaced disk) rejoins and is caught up.

Real peer processes on loopback, read only through the public API: three peers take a
few thousand tasks, a follower is SIGKILLed, its data directory deleted and the peer
restarted empty; within seconds it holds exactly the tasks the leader holds, and its
`/cluster` no longer says it is catching up.
"""

from __future__ import annotations

import json
import shutil

from tests.chaos import START_TIMEOUT, Json, list_all, request_once
from tests.conftest import ClusterFactory
from tests.harness import Cluster

TASKS = 2_000
BATCH = 500
CATCH_UP_TIMEOUT = 20.0  # generous for a loaded 2-core machine; it takes about a second


def _submit_batches(cluster: Cluster, peer: int) -> None:
    for start in range(0, TASKS, BATCH):
        specs = [{"kind": "echo", "args": i, "key": f"w{i}"} for i in range(start, start + BATCH)]
        body = json.dumps({"tasks": specs}).encode()
        status, data = request_once(cluster, peer, "POST", "/tasks/batch", body, timeout=30)
        assert status == 201, data[:300]


def _tasks(cluster: Cluster, peer: int) -> list[tuple[int, str, str]]:
    return [(t["id"], t["key"], t["state"]) for t in list_all(cluster, peer)]


def _all_succeeded(cluster: Cluster, peer: int) -> bool:
    view: Json | None = cluster.view(peer)
    return bool(view) and view["tasks"].get("succeeded") == TASKS


def test_a_wiped_follower_rejoins_and_holds_the_leaders_tasks(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    follower = 1
    view = cluster.view(leader)
    assert view is not None
    elected = [e for e in view["events"] if e["event"] == "became_leader"]
    assert elected and elected[-1]["peer"] == leader and elected[-1]["term"] == view["term"]
    _submit_batches(cluster, leader)
    cluster.wait_for(lambda: _all_succeeded(cluster, leader), 60, "every task to succeed")
    expected = _tasks(cluster, leader)
    assert len(expected) == TASKS

    cluster.kill(follower)
    shutil.rmtree(cluster.config.node_dir(follower))
    cluster.restart(follower)

    def caught_up() -> bool:
        view = cluster.view(follower)
        if not view or view["catching_up"] or view["leader"] != leader:
            return False
        return view["tasks"].get("succeeded") == TASKS

    cluster.wait_for(caught_up, CATCH_UP_TIMEOUT, f"wiped peer {follower} to catch up")
    assert _tasks(cluster, follower) == expected
    assert cluster.agreed_leader() == leader
    view = cluster.view(follower)
    assert view is not None and view["behind"] == 0
