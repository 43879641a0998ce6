"""Ring 3: API tokens on real peers.

A 3-peer cluster with a read, a write and an admin token (and `allow_shell`). Every
route of the API contract (`/openapi.json`) is called with no token, a wrong token and
each weaker role: the public ones answer, the others 401 (with `WWW-Authenticate`) or
403, with the error body, and not one peer's log moves. Shell tasks need admin. The
right tokens work through a follower too, the CLI takes `$BULLYQ_TOKEN`, and a peer
asked to serve a non-loopback address with auth off refuses to start.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from typing import Any

from peer.config import dump_config
from peer.tokens import AuthConfig
from tests.chaos import START_TIMEOUT
from tests.conftest import ClusterFactory
from tests.harness import Cluster
from tests.test_client_cli import _cli

READER, WRITER, ADMIN = "reader-" + "r" * 20, "writer-" + "w" * 20, "admin-" + "a" * 20
AUTH = (
    AuthConfig()
    .with_token("reader", "read", READER)
    .with_token("writer", "write", WRITER)
    .with_token("boss", "admin", ADMIN)
)
BODIES: dict[str, Any] = {
    "/tasks": {"kind": "echo", "args": 1},
    "/tasks/batch": {"tasks": [{"kind": "echo"}]},
    "/tasks/requeue": {"state": "failed"},
    "/schedules": {"name": "tick", "every": 60, "task": {"kind": "echo"}},
}
SHELL = {"kind": "shell", "args": {"cmd": ["true"]}}


def _call(
    cluster: Cluster, n: int, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    node = cluster.config.node(n)
    conn = http.client.HTTPConnection(node.host, node.port, timeout=10)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _routes(cluster: Cluster) -> list[tuple[str, str, bool]]:
    """(method, concrete path, public) of every operation in the contract."""
    status, _, raw = _call(cluster, 1, "GET", "/openapi.json", None)
    assert status == 200
    document = json.loads(raw)
    routes = []
    for template, operations in document["paths"].items():
        path = template
        for name in ("task_id", "name", "peer"):
            path = path.replace("{" + name + "}", "1")
        for method, operation in operations.items():
            if method in ("get", "post", "delete", "put", "patch"):
                public = operation.get("security", document.get("security")) == []
                routes.append((method.upper(), path, public))
    return routes


def _logs(cluster: Cluster) -> dict[int, tuple[int, int]]:
    views = cluster.views()
    return {n: (v["last_index"], v["commit_index"]) for n, v in views.items() if v}


def test_every_route_refuses_a_missing_wrong_or_weak_token_and_changes_nothing(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3, token=ADMIN, auth=AUTH, allow_shell=True)
    cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    # a follower learns the leader's first commit with its next heartbeat: wait for it, so
    # the comparison below sees only what the refused requests could have changed
    cluster.wait_for(
        lambda: all(v and v["ready"] for v in cluster.views().values()),
        START_TIMEOUT,
        "every peer to know the leader's first commit",
    )
    routes = _routes(cluster)
    assert len(routes) >= 20, routes
    before = _logs(cluster)
    refused = 0
    for method, path, public in routes:
        if path == "/events" or public:
            continue
        body = BODIES.get(path, {}) if method == "POST" else None
        for token in (None, "not-a-token-" + "x" * 20):
            status, headers, raw = _call(cluster, 2, method, path, token, body)
            assert status == 401, (method, path, token, status, raw)
            assert json.loads(raw)["error"]["code"] == "unauthorized"
            assert headers.get("WWW-Authenticate", "").startswith("Bearer")
            refused += 1
        weak = [READER] if method != "GET" else []
        if path.startswith("/members/"):
            weak.append(WRITER)
        for token in weak:
            status, _, raw = _call(cluster, 2, method, path, token, body)
            assert status == 403, (method, path, status, raw)
            assert json.loads(raw)["error"]["code"] == "forbidden"
            assert token.encode() not in raw
            refused += 1
    for path, body in (
        ("/tasks", SHELL),
        ("/tasks/batch", {"tasks": [{"kind": "echo"}, SHELL]}),
        ("/schedules", {"name": "sh", "every": 60, "task": SHELL}),
        ("/tasks/requeue", {"state": "failed"}),
    ):
        status, _, raw = _call(cluster, 2, "POST", path, WRITER, body)
        assert status == 403 and b"admin" in raw, (path, status, raw)
        refused += 1
    print(f"{refused} refused requests over {len(routes)} operations")
    assert _logs(cluster) == before, "a refused request changed a peer's log"

    for path in ("/health", "/openapi.json", "/"):
        assert _call(cluster, 2, "GET", path, None)[0] == 200
    assert _call(cluster, 2, "GET", "/metrics", READER)[0] == 200
    assert _call(cluster, 2, "GET", "/tasks", READER)[0] == 200
    status, _, raw = _call(cluster, 2, "POST", "/tasks", WRITER, {"kind": "echo", "args": 7})
    assert status == 201, raw  # through a follower: forwarded to the leader
    status, _, raw = _call(cluster, 1, "POST", "/tasks", ADMIN, SHELL)
    assert status == 201, raw
    status, _, raw = _call(cluster, 1, "POST", "/members/2/drain", ADMIN, {})
    assert status == 200, raw


def test_the_cli_takes_its_token_from_the_environment(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(3, token=ADMIN, auth=AUTH)
    cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    peer = ["--peer", cluster.url(1)]
    [ok] = _cli(
        ["submit", "echo", "--args", "3", *peer, "-o", "json"], env={"BULLYQ_TOKEN": WRITER}
    )
    assert ok[0] == 0, ok
    [refused] = _cli(["submit", "echo", *peer])
    assert refused[0] == 1 and "401" in refused[2] and "token" in refused[2], refused
    [weak] = _cli(["submit", "echo", "--token", READER, *peer])
    assert weak[0] == 1 and "403" in weak[2], weak


def test_a_peer_on_a_non_loopback_address_with_auth_off_refuses_to_start(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(1, start=False)
    exposed = cluster.config.nodes[0].__class__(1, "192.0.2.10", 7001)  # TEST-NET: not ours
    path = cluster.data_dir / "exposed.toml"
    path.write_text(dump_config(cluster.config.__class__(nodes=(exposed,))), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "peer", "serve", "--config", str(path), "--id", "1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done
    assert "not a loopback address" in done.stderr and "auth.insecure" in done.stderr
