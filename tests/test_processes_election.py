"""Ring 3: real peer processes on loopback, driven only through the public HTTP API.

Checks the bully rule end to end (the highest live id leads; a crash hands leadership to
the next highest), that a minority never leads and says so on `/health?ready=1`, and that
the signed peer endpoint refuses forged, unsigned, stale and malformed messages without
any change of term or leader.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from election.messages import Coordinator, LogPosition
from peer.runtime.auth import sign
from peer.runtime.transport import PATH as PEER_PATH
from peer.runtime.wire import encode_batch
from tests.conftest import ClusterFactory
from tests.harness import Cluster

START_TIMEOUT = 15.0  # cold start of five Python processes on a slow CI box, then election
FAILOVER_TIMEOUT = 8.0  # failure_timeout (0.5 s) plus election rounds, with a wide margin


def _terms_and_leaders(cluster: Cluster) -> dict[int, tuple[int, int | None]]:
    views = cluster.views(cluster.running_ids())
    assert all(v is not None for v in views.values()), cluster.describe()
    return {n: (v["term"], v["leader"]) for n, v in views.items() if v is not None}


def _hold(seconds: float, check: Callable[[], None]) -> None:
    """Call `check` every 20 ms for `seconds`: it must hold the whole time (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        time.sleep(0.02)


def test_highest_id_leads_a_crash_hands_over_and_a_minority_never_leads(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(5)
    failure_timeout = cluster.config.failure_timeout

    # Bully's rule: of five live peers, 5 leads, and everyone agrees.
    assert cluster.wait_for_leader(5, timeout=START_TIMEOUT) == 5
    first_term = cluster.view(5)["term"]  # type: ignore[index]

    # SIGKILL the leader: the four survivors agree on 4, in a newer term.
    cluster.kill(5)
    assert cluster.wait_for_leader(4, ids=[1, 2, 3, 4], timeout=FAILOVER_TIMEOUT) == 4
    second_term = cluster.view(4)["term"]  # type: ignore[index]
    assert second_term > first_term

    # Kill 4 and 3: two of five remain, a minority. Nobody may lead, and both say so.
    survivors = [1, 2]
    terms = {n: term for n, (term, _) in _terms_and_leaders(cluster).items() if n in survivors}
    cluster.kill(4)
    cluster.kill(3)

    def leaderless() -> bool:
        views = cluster.views(survivors)
        return all(v is not None and v["leader"] is None for v in views.values()) and all(
            cluster.ready_status(n) == 503 for n in survivors
        )

    cluster.wait_for(leaderless, 4 * failure_timeout + 2.0, "the minority to drop its leader")

    def still_leaderless() -> None:
        for n, view in cluster.views(survivors).items():
            assert view is not None, cluster.describe()
            assert view["role"] != "leader" and view["leader"] is None, cluster.describe()
            assert view["term"] == terms[n], f"peer {n} changed its term in a minority"
            assert cluster.ready_status(n) == 503

    # Settle: a minority must stay leaderless, not merely be between elections. Bounded:
    # four failure timeouts cover several election attempts and backoffs.
    _hold(4 * failure_timeout, still_leaderless)

    # Restart every killed peer (lowest first, so 5 has to take over from whoever is
    # first to lead): the majority is back and the highest id leads again.
    for n in (3, 4, 5):
        cluster.restart(n)
    assert cluster.wait_for_leader(5, timeout=START_TIMEOUT) == 5
    assert cluster.view(5)["term"] > second_term  # type: ignore[index]


def _post(cluster: Cluster, n: int, body: bytes, headers: dict[str, str]) -> int:
    answer = cluster.request(
        n, "POST", PEER_PATH, body, {**headers, "Content-Type": "application/json"}
    )
    assert answer is not None, f"peer {n} did not answer"
    return answer[0]


def test_forged_unsigned_stale_or_malformed_messages_are_refused_and_change_nothing(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(5)
    cluster.wait_for_leader(5, timeout=START_TIMEOUT)
    before = _terms_and_leaders(cluster)

    forged = encode_batch([Coordinator(term=10**12, sender=1, log=LogPosition())])
    now = time.time()
    refused = {
        "unsigned": {},
        "wrong secret": sign(b"not-the-cluster-secret", 1, now, forged),
        "stale (1 h old)": sign(cluster.secret, 1, now - 3600, forged),
        "future (1 h ahead)": sign(cluster.secret, 1, now + 3600, forged),
        "body swapped": sign(cluster.secret, 1, now, encode_batch([])),
    }
    malformed = [
        b"not json",
        b'{"kind": "Coordinator"}',
        b'[["Coordinator", {"term": -1, "sender": 1, "log": {"term": 0, "index": 0}}]]',
        b'[["Coordinator", {"term": 1, "sender": 1}]]',
        b'[["Takeover", {"term": 1, "sender": 1}]]',
        encode_batch([Coordinator(term=10**12, sender=2, log=LogPosition())]),  # not sender 1
    ]
    for n in cluster.ids:
        for why, headers in refused.items():
            assert _post(cluster, n, forged, headers) == 401, f"peer {n} accepted: {why}"
        for body in malformed:
            headers = sign(cluster.secret, 1, time.time(), body)
            assert _post(cluster, n, body, headers) == 400, f"peer {n} accepted {body[:60]!r}"
        # Control: the same signing, fresh and well-formed, is accepted, so the refusals
        # above are for the defect each one carries and not for the way the test signs.
        empty = encode_batch([])
        assert _post(cluster, n, empty, sign(cluster.secret, 1, time.time(), empty)) == 204

    # Settle: a refused message that leaked through would show within a few heartbeats
    # as a huge term or a lost leader; watch for 10 heartbeat intervals (bounded).
    def unchanged() -> None:
        assert _terms_and_leaders(cluster) == before, cluster.describe()

    _hold(10 * cluster.config.heartbeat_interval, unchanged)
    assert cluster.agreed_leader() == 5
    assert orjson.loads(cluster.request(5, "GET", "/health?ready=1")[1])["leader"] == 5  # type: ignore[index]
