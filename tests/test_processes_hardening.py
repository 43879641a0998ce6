"""Ring 3: the holes a security review found, each shown closed on real peers.

- header bytes that are not ASCII (a bearer token, a peer signature or sender) are
  refused with 401, never a 500;
- the leader itself refuses a forwarded retry of a shell task without admin (a
  follower's table may lag, so its own check is not enough);
- with auth off, a write a browser sends from another site's page is refused;
- a body trickled in is cut off after `body_timeout` (408), and an unsigned peer
  request is refused before its body is read;
- big writes forwarded together are split, so a follower forwards what the leader
  would take from a client directly.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from peer.runtime.auth import sign
from peer.runtime.forwarding import PATH as WRITES_PATH
from peer.runtime.transport import PATH as PEER_PATH
from peer.tokens import AuthConfig
from tests.chaos import START_TIMEOUT
from tests.conftest import ClusterFactory
from tests.harness import Cluster

ADMIN, WRITER = "admin-" + "a" * 20, "writer-" + "w" * 20
AUTH = AuthConfig().with_token("boss", "admin", ADMIN).with_token("writer", "write", WRITER)
STRANGER = 9  # signs as a peer id no member has: its numbers touch no member's


def _call(
    cluster: Cluster, n: int, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, Any]:
    node = cluster.config.node(n)
    conn = http.client.HTTPConnection(node.host, node.port, timeout=15)
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body))
    if data is not None:
        headers.setdefault("Content-Type", "application/json")
    try:
        conn.putrequest(method, path)
        for name, value in headers.items():
            conn.putheader(name.replace("_", "-"), value.encode("latin-1"))
        if data is not None:
            raw = data.encode() if isinstance(data, str) else data
            conn.putheader("Content-Length", str(len(raw)))
            conn.endheaders(raw)
        else:
            conn.endheaders()
        resp = conn.getresponse()
        raw_answer = resp.read()
        try:
            return resp.status, json.loads(raw_answer)
        except ValueError:
            return resp.status, raw_answer
    finally:
        conn.close()


def test_odd_header_bytes_are_401_and_the_leader_checks_shell_retries_itself(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3, token=ADMIN, auth=AUTH, allow_shell=True)
    leader = cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    assert leader is not None
    for header in ("Bearer \xff\xfe", "Bearer é" + "x" * 30):
        status, body = _call(cluster, 1, "GET", "/tasks", Authorization=header)
        assert status == 401 and body["error"]["code"] == "unauthorized", (header, body)
    empty = b"[]"
    signed = sign(cluster.secret, STRANGER, 1, "messages", 1, time.time(), empty)
    for name, value in (("X-Peer-Signature", "é" * 64), ("X-Peer-Id", "\xff")):
        status, body = _call(cluster, 1, "POST", PEER_PATH, empty, **{**signed, name: value})
        assert status == 401 and "malformed" in body["error"]["message"], (name, body)

    shell = {"kind": "shell", "args": {"cmd": ["false"]}, "max_attempts": 1}
    status, task = _call(cluster, leader, "POST", "/tasks", shell, Authorization=f"Bearer {ADMIN}")
    assert status == 201, task

    def failed() -> bool:
        path = f"/tasks/{task['id']}"
        status, body = _call(cluster, leader, "GET", path, Authorization=f"Bearer {ADMIN}")
        return status == 200 and body["state"] == "failed"

    cluster.wait_for(failed, 20, "the shell task to fail")

    def forward(admin: bool, seq: int) -> list[Any]:
        write = {"op": "retry", "specs": [], "order": None, "task_id": task["id"]}
        body = json.dumps([{**write, "rid": f"r{seq}", "admin": admin}]).encode()
        headers = sign(cluster.secret, STRANGER, leader, "writes", seq, time.time(), body)
        status, answers = _call(cluster, leader, "POST", WRITES_PATH, body, **headers)
        assert status == 200, answers
        return list(answers[0])

    refused = forward(False, 10)
    assert refused[0] == 403 and "admin" in refused[1]["error"]["message"], refused
    assert forward(True, 11)[0] == 200
    status, body = _call(
        cluster, 2, "POST", f"/tasks/{task['id']}/retry", {}, Authorization=f"Bearer {WRITER}"
    )
    assert status == 403, body


def test_cross_site_writes_slow_bodies_and_big_forwarded_writes(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3, body_timeout=1.0)
    cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    node = cluster.config.node(1)
    own = f"http://{node.host}:{node.port}"
    echo = {"kind": "echo", "args": 1}
    status, body = _call(cluster, 1, "POST", "/tasks", echo, Origin="http://evil.example")
    assert status == 403 and "another site" in body["error"]["message"], body
    assert _call(cluster, 1, "POST", "/tasks", echo, Origin=own)[0] == 201
    assert _call(cluster, 1, "POST", "/tasks", echo)[0] == 201  # not a browser
    assert _call(cluster, 1, "GET", "/tasks", Origin="http://evil.example")[0] == 200

    def trickle(path: str, length: int, signed: bool) -> tuple[bytes, float]:
        with socket.create_connection((node.host, node.port), timeout=10) as sock:
            started = time.monotonic()
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n"
            head += "Content-Type: application/json\r\n"
            if signed:
                head += "X-Peer-Signature: " + "0" * 64 + "\r\n"
            sock.sendall((head + "\r\n").encode() + b"[")  # then nothing more
            answer = sock.recv(4096)
            return answer, time.monotonic() - started

    answer, took = trickle("/tasks", 100, signed=False)
    assert answer.startswith(b"HTTP/1.1 408") and 0.8 <= took < 5, (answer[:60], took)
    answer, took = trickle(PEER_PATH, 1_000_000, signed=False)
    assert answer.startswith(b"HTTP/1.1 401") and took < 0.8, (answer[:60], took)

    big = {"kind": "echo", "args": "x" * 250_000}  # four of these: over max_body together
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: _call(cluster, 1, "POST", "/tasks", big), range(4)))
    assert [a[0] for a in answers] == [201] * 4, [a[0] for a in answers]
