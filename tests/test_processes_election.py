"""Ring 3: real peer processes on loopback, driven only through the public HTTP API.

Checks the bully rule end to end (the highest live id leads; a crash hands leadership to
the next highest), that a minority never leads and says so on `/health?ready=1`, and that
the signed peer endpoint refuses forged, unsigned, stale and malformed messages without
any change of term or leader, and that a captured message replayed (a request, or a
stream frame on a new stream) or redirected to another peer is refused too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from election.messages import Coordinator, LogPosition
from peer.runtime.auth import seal, sign
from peer.runtime.transport import PATH as PEER_PATH
from peer.runtime.transport import STREAM_PATH
from peer.runtime.wire import encode_batch
from tests.conftest import ClusterFactory
from tests.harness import Cluster

Headers = dict[str, str]
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
    seq = time.time_ns() // 1000  # as a restarted peer 1 would count ("messages": tools only)

    def signed(n: int, body: bytes, secret: bytes = cluster.secret, at: float = now) -> Headers:
        nonlocal seq
        seq += 1
        return sign(secret, 1, n, "messages", seq, at, body)

    def refused(n: int) -> dict[str, Headers]:
        return {
            "unsigned": {},
            "wrong secret": signed(n, forged, b"not-the-cluster-secret"),
            "stale (1 h old)": signed(n, forged, at=now - 3600),
            "future (1 h ahead)": signed(n, forged, at=now + 3600),
            "body swapped": signed(n, encode_batch([])),
            "for another peer": signed(n % len(cluster.ids) + 1, forged),
            "for another channel": sign(cluster.secret, 1, n, "writes", seq + 7, now, forged),
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
        for why, headers in refused(n).items():
            assert _post(cluster, n, forged, headers) == 401, f"peer {n} accepted: {why}"
        for body in malformed:
            headers = signed(n, body, at=time.time())
            assert _post(cluster, n, body, headers) == 400, f"peer {n} accepted {body[:60]!r}"
        # Control: the same signing, fresh and well-formed, is accepted, so the refusals
        # above are for the defect each one carries and not for the way the test signs.
        empty = encode_batch([])
        captured = signed(n, empty, at=time.time())
        assert _post(cluster, n, empty, captured) == 204
        assert _post(cluster, n, empty, captured) == 401, f"peer {n} accepted a replay"

    # Settle: a refused message that leaked through would show within a few heartbeats
    # as a huge term or a lost leader; watch for 10 heartbeat intervals (bounded).
    def unchanged() -> None:
        assert _terms_and_leaders(cluster) == before, cluster.describe()

    _hold(10 * cluster.config.heartbeat_interval, unchanged)
    assert cluster.agreed_leader() == 5
    assert orjson.loads(cluster.request(5, "GET", "/health?ready=1")[1])["leader"] == 5  # type: ignore[index]


def test_a_captured_stream_frame_replayed_is_refused_even_on_a_new_stream(
    cluster_factory: ClusterFactory,
) -> None:
    import asyncio

    import aiohttp

    cluster = cluster_factory(3)
    cluster.wait_for_leader(3, timeout=START_TIMEOUT)
    stranger = 9  # not a member: its empty frames deliver nothing, and its numbers are its own
    seq = time.time_ns() // 1000
    url = cluster.url(1) + STREAM_PATH

    def frame() -> bytes:
        nonlocal seq
        seq += 1
        return seal(cluster.secret, stranger, 1, seq, time.time(), encode_batch([]))

    async def send(session: aiohttp.ClientSession, frames: list[bytes]) -> str | None:
        """Open a stream, send `frames`; the peer's reason if it closes it within 1 s."""
        nonlocal seq
        seq += 1
        headers = sign(cluster.secret, stranger, 1, "open", seq, time.time(), b"")
        async with session.ws_connect(url, headers=headers) as ws:
            for data in frames:
                await ws.send_bytes(data)
            try:
                message = await ws.receive(timeout=1.0)
            except TimeoutError:
                return None  # still open: every frame was taken
            return str(ws.close_code) + " " + str(message.extra or "")

    async def run() -> list[str | None]:
        async with aiohttp.ClientSession() as session:
            captured = frame()
            return [
                await send(session, [captured]),  # the original: taken
                await send(session, [captured]),  # replayed on a new stream
                await send(session, [frame(), frame()]),  # control: fresh frames are taken
                await send(session, [seal(cluster.secret, stranger, 2, seq + 5, time.time(), b"")]),
            ]

    original, replayed, fresh, redirected = asyncio.run(run())
    assert original is None and fresh is None, (original, fresh)
    assert replayed is not None and "1008" in replayed and "replayed" in replayed, replayed
    assert redirected is not None and "bad signature" in redirected, redirected
    assert cluster.agreed_leader() == 3
