"""Ring 3: a peer whose data directory is wiped (a replaced disk) rejoins and is caught up,
from the entries or, once the leader compacted them, from its snapshot; a whole cluster
restarts from its snapshots and the logs' tails; a peer started a second time on the
same data directory is refused (exit 2, saying why) and the first goes on.

Real peer processes on loopback, read only through the public API: three peers take a
few thousand tasks, a follower is SIGKILLed, its data directory deleted and the peer
restarted empty; within seconds it holds exactly the tasks the leader holds, and its
`/cluster` no longer says it is catching up.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.chaos import START_TIMEOUT, Json, list_all, request_once
from tests.conftest import ClusterFactory
from tests.harness import PROJECT_ROOT, Cluster

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


@pytest.mark.parametrize("snapshots", [False, True], ids=["from-entries", "from-snapshot"])
def test_a_wiped_follower_rejoins_and_holds_the_leaders_tasks(
    cluster_factory: ClusterFactory, snapshots: bool
) -> None:
    settings = {"snapshot_every": 40, "snapshot_keep": 5, "snapshot_chunk": 20_000}
    cluster = cluster_factory(3, **(settings if snapshots else {}))
    leader = cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    follower = 1

    def elected() -> list[Json]:
        # (its event is reported once its own write of the term landed, which may come
        # after two followers' acks already committed its no-op)
        view = _view(cluster, leader)
        return [e for e in view["events"] if e["event"] == "became_leader"]

    cluster.wait_for(lambda: bool(elected()), START_TIMEOUT, "the leader's became_leader event")
    assert (
        elected()[-1]["peer"] == leader and elected()[-1]["term"] == _view(cluster, leader)["term"]
    )
    _submit_batches(cluster, leader)
    cluster.wait_for(lambda: _all_succeeded(cluster, leader), 60, "every task to succeed")
    expected = _tasks(cluster, leader)
    assert len(expected) == TASKS
    compacted = _view(cluster, leader)["log_base"]
    assert (compacted > 0) == snapshots, compacted

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
    view = _view(cluster, follower)
    assert view["behind"] == 0
    installed = [e for e in view["events"] if e["event"] == "snapshot_installed"]
    assert bool(installed) == snapshots, view["events"]
    if snapshots:  # it never held the compacted entries, only the leader's snapshot
        assert installed[0]["peer"] == leader and view["log_base"] >= installed[0]["index"]


def test_a_cluster_restarts_from_its_snapshots_and_the_logs_tails(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3, snapshot_every=40, snapshot_keep=5)
    leader = cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    _submit_batches(cluster, leader)
    cluster.wait_for(lambda: _all_succeeded(cluster, leader), 60, "every task to succeed")
    expected = _tasks(cluster, leader)
    bases = {n: _view(cluster, n)["log_base"] for n in cluster.ids}
    assert all(bases.values()), bases
    for n in cluster.ids:
        cluster.kill(n)
    for n in cluster.ids:
        cluster.restart(n)
    leader = cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    for n in cluster.ids:
        cluster.wait_for(lambda n=n: _all_succeeded(cluster, n), 20, f"peer {n} to load")
        assert _tasks(cluster, n) == expected
        view = _view(cluster, n)
        assert view["log_base"] >= bases[n]  # started from the snapshot, not from entry 1
        assert not [e for e in view["events"] if e["event"] == "snapshot_installed"]


def _view(cluster: Cluster, peer: int) -> Json:
    view = cluster.view(peer)
    assert view is not None, f"peer {peer} does not answer"
    return view


def test_a_peer_started_twice_on_one_data_directory_is_refused_and_the_first_goes_on(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3)
    cluster.wait_for_leader(timeout=START_TIMEOUT)
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    second = subprocess.run(
        [sys.executable, "-m", "peer", "serve", "--config", str(cluster.config_path), "--id", "1"],
        capture_output=True,
        text=True,
        cwd=cluster.data_dir,
        env=env,
        timeout=60,
    )
    assert second.returncode == 2, second.stderr[-2000:]
    assert "is held by another process" in second.stderr, second.stderr[-2000:]
    assert "Traceback" not in second.stderr
    status, _ = request_once(cluster, 1, "POST", "/tasks", b'{"kind": "echo"}')
    assert status == 201  # the first peer 1 still serves, its database untouched
