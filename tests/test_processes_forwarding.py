"""Ring 3: writes a follower forwards travel its forward stream to the leader, several
frames at a time, and the stream refuses what is not a signed peer's well-formed frame.

- Concurrent submits through every follower are acknowledged once each, and the leader
  served none of them as `POST /peer/writes` (its request metrics say so).
- On a stream opened with signed headers: a frame signed for another channel closes the
  stream; a signed frame of malformed writes is answered `[number, null]` and changes no
  peer's log; a signed frame of good writes is answered with their replies, even with
  several frames in flight.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp

from peer.runtime.auth import ReplayGuard, Signer, unseal
from peer.runtime.forwarding import STREAM_PATH
from tests.chaos import START_TIMEOUT
from tests.conftest import ClusterFactory
from tests.harness import Cluster

STRANGER = 9  # signs as a peer id no member has: its numbers touch no member's


def _submit(cluster: Cluster, n: int, i: int) -> int:
    """One submit to peer `n` on a connection of its own (for a thread)."""
    node = cluster.config.node(n)
    conn = http.client.HTTPConnection(node.host, node.port, timeout=15)
    try:
        body = json.dumps({"kind": "echo", "args": i})
        conn.request("POST", "/tasks", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    assert resp.status == 201, raw
    return int(json.loads(raw)["id"])


def test_writes_through_followers_travel_the_forward_stream(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    assert leader is not None
    followers = [n for n in cluster.ids if n != leader]
    jobs = [(followers[i % 2], i) for i in range(60)]

    with ThreadPoolExecutor(12) as pool:
        ids = list(pool.map(lambda job: _submit(cluster, *job), jobs))
    assert len(set(ids)) == len(jobs)
    answer = cluster.request(leader, "GET", "/metrics")
    assert answer is not None and answer[0] == 200
    served = [
        line
        for line in answer[1].decode().splitlines()
        if line.startswith("bullyq_http_request_duration_seconds_count")
    ]
    assert served and not [line for line in served if '"/peer/writes"' in line], served


async def _exchange(
    cluster: Cluster, signer: Signer, leader: int, frames: list[bytes]
) -> list[object]:
    """Open the forward stream as peer `STRANGER`, send `frames`, and return what comes
    back: the answers opened, or the close code once the leader closes the stream."""
    headers = signer.headers(leader, "open", time.time(), b"")
    out: list[object] = []
    guard = ReplayGuard(since=time.time() - 60)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(cluster.url(leader) + STREAM_PATH, headers=headers) as ws,
    ):
        for frame in frames:
            await ws.send_bytes(frame)
        async with asyncio.timeout(15):
            while len(out) < len(frames):
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.BINARY:
                    out.append(("closed", ws.close_code))
                    break
                opened = unseal(
                    cluster.secret, STRANGER, message.data, time.time(), guard, "answers"
                )
                assert not isinstance(opened, str), opened
                out.append(json.loads(opened[1]))
    return out


def test_the_forward_stream_answers_signed_frames_and_refuses_the_rest(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    assert leader is not None
    signer = Signer(cluster.secret, STRANGER, 1 << 32)
    before = cluster.view(leader)
    assert before is not None

    bad_spec = {"op": "submit", "specs": [{"kind": 5}], "order": None, "task_id": None, "rid": "b"}
    bad = json.dumps([1, [bad_spec]]).encode()
    assert asyncio.run(
        _exchange(cluster, signer, leader, [signer.frame(leader, time.time(), bad, "forward")])
    ) == [[1, None]]
    after = cluster.view(leader)
    assert after is not None and after["last_index"] == before["last_index"]

    stream_frame = signer.frame(leader, time.time(), json.dumps([2, []]).encode())
    closed = asyncio.run(_exchange(cluster, signer, leader, [stream_frame]))
    assert closed == [("closed", aiohttp.WSCloseCode.POLICY_VIOLATION)], closed

    def write(i: int) -> dict[str, object]:
        spec = {"kind": "echo", "args": i}
        return {"op": "submit", "specs": [spec], "rid": f"fwd-{i}", "order": None, "task_id": None}

    frames = [
        signer.frame(
            leader, time.time(), json.dumps([n, [write(n), write(n + 100)]]).encode(), "forward"
        )
        for n in range(3, 7)
    ]
    answers = asyncio.run(_exchange(cluster, signer, leader, frames))
    assert sorted(a[0] for a in answers) == [3, 4, 5, 6], answers  # type: ignore[index]
    for answer in answers:
        replies = answer[1]  # type: ignore[index]
        assert [r[0] for r in replies] == [201, 201], replies
