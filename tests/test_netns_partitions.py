"""Ring 3 across a network: five peers, each in its own network namespace (tests/netns.py),
under keyed writes while the links between them are cut.

- A partition that leaves the leader in the minority: the minority refuses writes (no
  write sent there is acknowledged, its peers stop saying a ready leader is known), the
  majority elects a leader of its own and goes on acknowledging; after healing, every
  acknowledged key is held once, under the id its client was given, by every peer.
- A one-way cut (what the leader sends is dropped), then 20% random loss on every link:
  the others take over, and again nothing acknowledged is lost or duplicated.

Skipped, with the reason, where namespaces cannot be made (not root, no `ip netns`, no
`nft`); `.ci/run` installs nftables.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from peer.config import NodeAddress
from peer.tokens import AuthConfig
from tests.chaos import START_TIMEOUT, list_all, request_once
from tests.conftest import ClusterFactory
from tests.harness import Cluster
from tests.netns import NetLab

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(NetLab.why_not() is not None, reason=str(NetLab.why_not())),
]

PORT = 7001  # every peer has its own namespace, so they all listen on the same port
WAIT = 20.0
MAX_WRITES = 5000  # a bound on every writer, whatever the timings


@pytest.fixture
def lab() -> Iterator[NetLab]:
    with NetLab(5) as made:
        yield made


def _cluster(cluster_factory: ClusterFactory, lab: NetLab) -> Cluster:
    nodes = tuple(NodeAddress(i, lab.address(i), PORT) for i in range(1, 6))
    # (a private network of our own namespaces: no API tokens needed, said explicitly)
    cluster = cluster_factory(5, start=False, nodes=nodes, auth=AuthConfig(insecure=True))
    cluster.prefix = {i: lab.prefix(i) for i in range(1, 6)}
    cluster.start_all()
    assert cluster.wait_for_leader(expected=5, timeout=START_TIMEOUT) == 5
    return cluster


class Writers:
    """Clients submitting keyed echo tasks to the given peers until stopped; what was
    acknowledged (key -> id), and which peers acknowledged anything since `mark()`."""

    def __init__(self, cluster: Cluster, peers: list[int]) -> None:
        self.cluster, self.peers = cluster, peers
        self.acked: dict[str, int] = {}
        self.acked_by: dict[int, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(p,)) for p in peers]

    def __enter__(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def mark(self) -> None:
        with self.lock:
            self.acked_by = {}

    def _run(self, peer: int) -> None:
        for n in range(MAX_WRITES):
            if self.stop.is_set():
                return
            key = f"p{peer}-{n}"
            body = json.dumps({"kind": "echo", "args": n, "key": key}).encode()
            try:
                status, raw = request_once(self.cluster, peer, "POST", "/tasks", body, timeout=3)
            except OSError:
                time.sleep(0.05)
                continue
            if status in (200, 201):
                with self.lock:
                    self.acked[key] = json.loads(raw)["id"]
                    self.acked_by[peer] = self.acked_by.get(peer, 0) + 1
            else:
                time.sleep(0.05)


def _leader_among(cluster: Cluster, peers: set[int]) -> int | None:
    views = [cluster.view(n) for n in peers]
    leaders = {v["leader"] for v in views if v}
    if len(leaders) == 1 and all(v and v["ready"] is not None for v in views):
        (leader,) = leaders
        return leader if leader in peers else None
    return None


def _check_nothing_lost(cluster: Cluster, acked: dict[str, int]) -> None:
    assert acked, "no write was acknowledged: the test exercised nothing"
    for n in cluster.ids:
        tasks = list_all(cluster, n)
        by_key: dict[str, list[int]] = {}
        for task in tasks:
            if task["key"]:
                by_key.setdefault(task["key"], []).append(task["id"])
        for key, task_id in acked.items():
            assert by_key.get(key) == [task_id], f"peer {n}: {key} -> {by_key.get(key)}"
        assert all(len(ids) == 1 for ids in by_key.values()), f"peer {n}: a key twice"


def _converged(cluster: Cluster) -> bool:
    views = cluster.views()
    if not all(views.values()):
        return False
    marks = {(v["leader"], v["commit_index"]) for v in views.values() if v}
    return len(marks) == 1 and all(
        v and v["commit_index"] == v["last_index"] for v in views.values()
    )


def test_a_minority_with_the_leader_refuses_writes_the_majority_goes_on(
    cluster_factory: ClusterFactory, lab: NetLab
) -> None:
    cluster = _cluster(cluster_factory, lab)
    try:
        with Writers(cluster, [1, 3, 5]) as writers:
            cluster.wait_for(lambda: len(writers.acked) >= 50, WAIT, "writes before the cut")
            lab.cut({4, 5}, {1, 2, 3})
            cut_at = time.monotonic()
            majority = cluster.wait_for(
                lambda: _leader_among(cluster, {1, 2, 3}), WAIT, "a leader among 1, 2 and 3"
            )
            print(f"peer {majority} leads the majority {time.monotonic() - cut_at:.2f} s after")

            def minority_not_ready() -> bool:
                return all(cluster.ready_status(n) == 503 for n in (4, 5))

            cluster.wait_for(minority_not_ready, WAIT, "the minority to know it has no leader")
            writers.mark()
            before = len(writers.acked)

            def both_majority_peers_ack() -> bool:
                with writers.lock:
                    return writers.acked_by.get(1, 0) > 0 and writers.acked_by.get(3, 0) > 0

            cluster.wait_for(both_majority_peers_ack, WAIT, "writes through 1 and 3")
            cluster.wait_for(lambda: len(writers.acked) >= before + 50, WAIT, "majority writes")
            with writers.lock:
                held = dict(writers.acked_by)
            assert held.get(5, 0) == 0, f"the minority acknowledged writes: {held}"
            lab.heal()
            cluster.wait_for(lambda: cluster.agreed_leader() == 5, WAIT, "peer 5 to lead again")
            cluster.wait_for(lambda: len(writers.acked) >= before + 100, WAIT, "writes after")
        cluster.wait_for(lambda: _converged(cluster), WAIT, "every peer to hold the whole log")
        _check_nothing_lost(cluster, writers.acked)
        print(f"{len(writers.acked)} acknowledged writes, all held once by every peer")
    finally:
        cluster.stop_all()


def test_a_one_way_cut_and_random_loss_lose_nothing(
    cluster_factory: ClusterFactory, lab: NetLab
) -> None:
    cluster = _cluster(cluster_factory, lab)
    try:
        with Writers(cluster, [1, 2, 4]) as writers:
            cluster.wait_for(lambda: len(writers.acked) >= 50, WAIT, "writes before the cut")
            lab.cut_one_way(5, {1, 2, 3, 4})  # the leader hears them, they never hear it
            cluster.wait_for(
                lambda: _leader_among(cluster, {1, 2, 3, 4}) == 4, WAIT, "peer 4 to take over"
            )
            lab.heal()
            lab.loss(20)
            before = len(writers.acked)
            cluster.wait_for(
                lambda: len(writers.acked) >= before + 50, WAIT * 2, "writes through the loss"
            )
            lab.heal()
            cluster.wait_for(lambda: cluster.agreed_leader() == 5, WAIT, "peer 5 to lead again")
        cluster.wait_for(lambda: _converged(cluster), WAIT, "every peer to hold the whole log")
        _check_nothing_lost(cluster, writers.acked)
        print(f"{len(writers.acked)} acknowledged writes, all held once by every peer")
    finally:
        cluster.stop_all()
