"""Ring 3: membership changes at run time, on real peer processes read only through the
public API.

Five peers take keyed writes from clients the whole time. A sixth peer, started with
`peer serve --join`, is added through a follower (`POST /members`): it joins as a
learner, catches up from the leader's snapshot, is promoted, and, the highest id of the
members, takes the lead (bully's rule: the one leader change the change requires). Then
the first peer is removed (`DELETE /members/1`) with no leader change at all, and
killed. Every acknowledged write is on each remaining peer, once, under the id its
client got. Bad membership requests are refused with the field and reason, and change
nothing.
"""

from __future__ import annotations

import json
import threading
import time

from tests.chaos import (
    REQUEST_TIMEOUT,
    RETRY_WINDOW,
    RUN_TIME_LIMIT,
    START_TIMEOUT,
    Json,
    Ledger,
    Load,
    Submitter,
    check_listing,
    list_all,
    request_once,
)
from tests.conftest import ClusterFactory
from tests.harness import Cluster

LOAD = Load("m", clients=3, pace=40.0, phase_seconds=1.0, phase_acks=20, min_acked=100)
CHANGE_TIMEOUT = 30.0  # a learner's catch-up and promotion, on a loaded 2-core machine
SNAPSHOTS = {"snapshot_every": 200, "snapshot_keep": 20, "snapshot_chunk": 20_000}


def _members(cluster: Cluster, peer: int) -> Json:
    status, data = request_once(cluster, peer, "GET", "/members")
    assert status == 200, data[:300]
    members: Json = json.loads(data)
    return members


def _voters(cluster: Cluster, peer: int) -> list[int]:
    view = cluster.view(peer)
    if not view:
        return []
    return [m["id"] for m in view["configuration"]["voters"]]


def _all_vote(cluster: Cluster, peers: list[int], voters: list[int]) -> bool:
    return all(_voters(cluster, p) == voters for p in peers)


def _leaders_seen(cluster: Cluster, peers: list[int], seen: list[int]) -> None:
    """Append the agreed leader to `seen` when it differs from the last one seen."""
    leader = cluster.agreed_leader(peers)
    if leader is not None and (not seen or seen[-1] != leader):
        seen.append(leader)


def test_add_a_sixth_peer_and_remove_the_first_while_clients_write(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(5, **SNAPSHOTS)
    assert cluster.wait_for_leader(expected=5, timeout=START_TIMEOUT) == 5
    term_before = cluster.view(5)["term"]  # type: ignore[index]
    ledger, stop = Ledger(), threading.Event()
    deadline = time.monotonic() + RUN_TIME_LIMIT
    clients = [Submitter(c, cluster, ledger, stop, LOAD, deadline) for c in range(LOAD.clients)]
    for client in clients:
        client.start()
    leaders: list[int] = [5]
    try:
        cluster.wait_for(lambda: ledger.count() >= 200, 20, "200 acknowledged writes")
        new = cluster.add_node()
        cluster.start(new)
        body = json.dumps({"id": new, "url": cluster.url(new)}).encode()
        asked = time.monotonic()
        status, data = request_once(cluster, 2, "POST", "/members", body, timeout=10)
        answered = time.monotonic()
        assert status == 200, data[:300]  # a follower forwards it to the leader
        answer = json.loads(data)
        assert [m["id"] for m in answer["learners"]] == [new], answer
        everyone = [1, 2, 3, 4, 5, new]

        def promoted_and_leading() -> bool:
            _leaders_seen(cluster, everyone, leaders)
            return _all_vote(cluster, everyone, everyone) and cluster.agreed_leader() == new

        cluster.wait_for(promoted_and_leading, CHANGE_TIMEOUT, f"peer {new} to vote and lead")
        leading = time.monotonic()
        view = cluster.view(new)
        assert view is not None
        installed = [e for e in view["events"] if e["event"] == "snapshot_installed"]
        assert installed, view["events"]  # it caught up from the leader's snapshot
        term_added = view["term"]

        rest = [2, 3, 4, 5, new]
        removing = time.monotonic()
        status, data = request_once(cluster, 3, "DELETE", "/members/1", timeout=10)
        assert status == 200, data[:300]
        removal_answered = time.monotonic()

        def removed() -> bool:
            _leaders_seen(cluster, rest, leaders)
            return _all_vote(cluster, rest, rest)

        cluster.wait_for(removed, CHANGE_TIMEOUT, "peer 1 to be removed")
        out = cluster.view(1)
        assert out is not None and out["configuration"]["member"] is False, out
        cluster.kill(1)
        acked = ledger.count()
        cluster.wait_for(lambda: ledger.count() >= acked + 100, 20, "100 more writes")
        _leaders_seen(cluster, rest, leaders)
    finally:
        stop.set()
        for client in clients:
            client.join(RETRY_WINDOW + 2 * REQUEST_TIMEOUT)
    assert not ledger.crashes and not ledger.unexpected, (ledger.crashes, ledger.unexpected[:5])
    assert leaders == [5, new], leaders  # the one change bully's rule asks for, no other
    final = cluster.view(new)
    assert final is not None and final["term"] == term_added  # removing 1 cost no election
    assert term_added > term_before
    print(  # (the figures, with -s)
        f"membership: add answered in {answered - asked:.2f} s, peer {new} voting and leading "
        f"{leading - asked:.2f} s after the request; remove answered in "
        f"{removal_answered - removing:.2f} s; {len(ledger.acked)} writes acknowledged, "
        f"statuses {dict(ledger.statuses)}"
    )
    for peer in rest:
        cluster.wait_for(
            lambda p=peer: len(list_all(cluster, p)) >= len(ledger.acked),  # type: ignore[misc]
            20,
            f"peer {peer} to hold every acknowledged write",
        )
        check_listing(peer, list_all(cluster, peer), ledger.acked)


def test_membership_requests_are_checked_and_bad_ones_change_nothing(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3)
    cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    before = _members(cluster, 1)
    assert [m["id"] for m in before["voters"]] == [1, 2, 3] and before["committed"] is True
    host, port = "127.0.0.1", cluster.config.node(1).port
    refused = [
        ({"id": 4}, 400, "url"),
        ({"id": 0, "url": f"http://{host}:9"}, 400, "id"),
        ({"id": True, "url": f"http://{host}:9"}, 400, "id"),
        ({"id": 4, "url": f"https://{host}:9"}, 400, "url"),  # not this cluster's scheme
        ({"id": 4, "url": f"http://{host}:9/peer"}, 400, "url"),
        ({"id": 4, "url": f"http://{host}"}, 400, "url"),
        ({"id": 4, "url": "http://:9"}, 400, "url"),
        ({"id": 4, "url": f"http://{host}:9", "role": "voter"}, 400, "role"),
        ({"id": 2, "url": f"http://{host}:9"}, 409, None),  # already a member
        ({"id": 4, "url": f"http://{host}:{port}"}, 409, None),  # a member's address
    ]
    for body, status, field in refused:
        got, data = request_once(cluster, 2, "POST", "/members", json.dumps(body).encode())
        assert got == status, (body, got, data[:300])
        error = json.loads(data)["error"]
        assert error.get("field") == field, (body, error)
    got, data = request_once(cluster, 2, "POST", "/members", b"[1, 2")
    assert got == 400 and json.loads(data)["error"]["field"] == "body"
    for path, status in (("/members/9", 404), ("/members/x", 400), ("/members/0", 400)):
        got, data = request_once(cluster, 1, "DELETE", path)
        assert got == status, (path, got, data[:300])
    assert _members(cluster, 3) == before  # nothing changed, anywhere
    # the same add twice (a client retrying after a lost answer) changes it once
    body = json.dumps({"id": 4, "url": f"http://{host}:9"}).encode()
    first = request_once(cluster, 1, "POST", "/members", body)
    again = request_once(cluster, 3, "POST", "/members", body)
    assert first[0] == again[0] == 200, (first, again)
    added = json.loads(again[1])
    assert [m["id"] for m in added["learners"]] == [4] and added["index"] > before["index"]
    # peer 4 never runs: a learner waits, it never counts; the cluster still writes
    status, data = request_once(cluster, 1, "POST", "/tasks", b'{"kind": "echo"}')
    assert status == 201, data[:300]
    # a second change waits for nothing but the first: removing the learner is allowed
    got, data = request_once(cluster, 2, "DELETE", "/members/4")
    assert got == 200 and json.loads(data)["learners"] == [], data[:300]
