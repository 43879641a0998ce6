"""Ring 3: the task API on real peer processes, read and written only over public HTTP.

Chaos: eight clients submit keyed tasks to random peers while the leader is SIGKILLed
twice; every task a client saw acknowledged (200/201 with an id) must then be on every
peer exactly once under the id the client got, and must survive a SIGKILL of the whole
cluster (the clients and the common part of the run are in `tests/chaos.py`). Bad input:
every malformed or refused request sent to a follower gets its status and an error body
naming the field, and changes no peer's log, commit index or tasks.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any

from tests import chaos
from tests.chaos import START_TIMEOUT, Json, request_once
from tests.conftest import ClusterFactory
from tests.harness import Cluster, View

SETTLE_TIMEOUT = 15.0  # every peer applies everything once the writes stop
LOAD = chaos.Load("chaos", clients=8, pace=20.0, phase_seconds=4.0, phase_acks=60, min_acked=200)


# ---------------------------------------------------------------------------- settle


def _wait_settled(
    cluster: Cluster, min_commit: int = 0, stable_for: float = 0.6
) -> dict[int, View]:
    """Wait until every running peer agrees on a ready leader, has applied its whole log,
    and all report one commit index (>= `min_commit`) that stays put for `stable_for` s."""
    seen: dict[str, Any] = {"commit": None, "since": 0.0}

    def settled() -> dict[int, View] | None:
        if cluster.agreed_leader() is None:
            return None
        views = cluster.views(cluster.running_ids())
        if any(v is None for v in views.values()):
            return None
        marks = {(v["last_index"], v["commit_index"]) for v in views.values() if v is not None}
        last, commit = marks.pop() if len(marks) == 1 else (None, None)
        if commit is None or last != commit or commit < min_commit:
            seen["commit"] = None
            return None
        now = time.monotonic()
        if seen["commit"] != commit:
            seen["commit"], seen["since"] = commit, now
            return None
        if now - seen["since"] < stable_for:
            return None
        return {n: v for n, v in views.items() if v is not None}

    return cluster.wait_for(settled, SETTLE_TIMEOUT, "every peer to apply the whole log")


# ---------------------------------------------------------------------------- checks


def _check_tables(
    tables: dict[int, list[Json]], views: dict[int, View], acked: dict[str, int]
) -> dict[int, str]:
    """Each peer: counts matching `/cluster`, the listing checks of `check_listing`, each
    key's task the one its client submitted; and all peers agree on the key of every id."""
    agreed: dict[int, str] = {}
    for n, tasks in sorted(tables.items()):
        assert sum(views[n]["tasks"].values()) == len(tasks), f"peer {n}: counts != listing"
        chaos.check_listing(n, tasks, acked)
        for t in tasks:  # the task behind each key is the one that client submitted
            want = {"kind": "echo", "args": chaos.submitted_args(t["key"])}
            assert {k: t[k] for k in want} == want, f"peer {n}: task {t['id']} is {t}"
        for t in tasks:
            other = agreed.setdefault(t["id"], t["key"])
            assert other == t["key"], f"peer {n}: task {t['id']} is {t['key']!r}, not {other!r}"
    return agreed


def test_chaos_acknowledged_tasks_survive_leader_crashes_exactly_once(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(5)
    cluster.wait_for_leader(timeout=START_TIMEOUT)

    ledger = chaos.run_chaos(cluster, LOAD).ledger

    views = _wait_settled(cluster)
    assert cluster.running_ids() == list(cluster.ids), "a peer exited by itself"
    tables = {n: chaos.list_all(cluster, n) for n in cluster.ids}
    before = _check_tables(tables, views, ledger.acked)

    # The whole cluster crashes at once: what was acknowledged is on disk on a majority.
    commit = max(v["commit_index"] for v in views.values())
    for n in cluster.ids:
        cluster.kill(n)
    for n in cluster.ids:
        cluster.start(n)
    cluster.wait_for_leader(timeout=START_TIMEOUT)
    views = _wait_settled(cluster, min_commit=commit + 1)  # + the new leader's no-op
    assert cluster.running_ids() == list(cluster.ids), "a peer exited by itself"
    tables = {n: chaos.list_all(cluster, n) for n in cluster.ids}
    after = _check_tables(tables, views, ledger.acked)
    changed = sorted(i for i, key in before.items() if after.get(i) != key)
    assert not changed, f"tasks changed across the full restart: {changed[:5]}"


# ------------------------------------------------------------------------ bad input


def _snapshot(cluster: Cluster) -> dict[int, tuple[int, int, dict[str, int]]]:
    views = cluster.views()
    assert all(v is not None for v in views.values()), cluster.describe()
    return {n: (v["last_index"], v["commit_index"], v["tasks"]) for n, v in views.items() if v}


def _hold(seconds: float, check: Callable[[], None]) -> None:
    """Call `check` every 50 ms for `seconds`: it must hold the whole time (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        check()
        time.sleep(0.05)


def _body(value: Any) -> bytes:
    return json.dumps(value).encode()


def _bad_requests(existing: int) -> list[tuple[str, str, str, bytes | None, int, str | None]]:
    """(what, method, path, body, expected status, field the error must name)."""
    echo = {"kind": "echo"}
    big = _body({"kind": "echo", "args": "x" * (1 << 20)})
    post, get = "POST", "GET"
    return [
        ("unknown field", post, "/tasks", _body({**echo, "colour": "red"}), 400, "colour"),
        ("kind missing", post, "/tasks", _body({"args": {}}), 400, "kind"),
        ("kind as number", post, "/tasks", _body({"kind": 7}), 400, "kind"),
        ("priority as string", post, "/tasks", _body({**echo, "priority": "1"}), 400, "priority"),
        ("priority as bool", post, "/tasks", _body({**echo, "priority": True}), 400, "priority"),
        ("max_attempts 0", post, "/tasks", _body({**echo, "max_attempts": 0}), 400, "max_attempts"),
        ("timeout negative", post, "/tasks", _body({**echo, "timeout": -1}), 400, "timeout"),
        ("delay negative", post, "/tasks", _body({**echo, "delay": -0.5}), 400, "delay"),
        (
            "sleep without seconds",
            post,
            "/tasks",
            _body({"kind": "sleep", "args": {}}),
            400,
            "args",
        ),
        ("unknown kind", post, "/tasks", _body({"kind": "no-such-kind"}), 400, "kind"),
        (
            "depends_on unknown id",
            post,
            "/tasks",
            _body({**echo, "depends_on": [10**9]}),
            400,
            "depends_on",
        ),
        (
            "depends_on not ids",
            post,
            "/tasks",
            _body({**echo, "depends_on": ["a"]}),
            400,
            "depends_on",
        ),
        ("empty key", post, "/tasks", _body({**echo, "key": ""}), 400, "key"),
        ("malformed JSON", post, "/tasks", b'{"kind": "echo",', 400, "body"),
        ("empty body", post, "/tasks", b"", 400, "body"),
        ("array body", post, "/tasks", _body([echo]), 400, "body"),
        ("string body", post, "/tasks", _body("echo"), 400, "body"),
        ("body over max_body", post, "/tasks", big, 413, None),
        (
            "batch cycle",
            post,
            "/tasks/batch",
            _body(
                {
                    "tasks": [
                        {**echo, "ref": "a", "after": ["b"]},
                        {**echo, "ref": "b", "after": ["a"]},
                    ]
                }
            ),
            400,
            ".after",
        ),
        (
            "batch self cycle",
            post,
            "/tasks/batch",
            _body({"tasks": [{**echo, "ref": "a", "after": ["a"]}]}),
            400,
            "tasks[0].after",
        ),
        (
            "batch unknown ref",
            post,
            "/tasks/batch",
            _body({"tasks": [{**echo, "ref": "a"}, {**echo, "after": ["zz"]}]}),
            400,
            "tasks[1].after",
        ),
        (
            "batch duplicate ref",
            post,
            "/tasks/batch",
            _body({"tasks": [{**echo, "ref": "a"}, {**echo, "ref": "a"}]}),
            400,
            "tasks[1].ref",
        ),
        ("batch empty", post, "/tasks/batch", _body({"tasks": []}), 400, "tasks"),
        ("batch not a list", post, "/tasks/batch", _body({"tasks": echo}), 400, "tasks"),
        (
            "batch bad task",
            post,
            "/tasks/batch",
            _body({"tasks": [echo, {"kind": 1}]}),
            400,
            "tasks[1].kind",
        ),
        ("batch malformed JSON", post, "/tasks/batch", b"[", 400, "body"),
        ("list state=bogus", get, "/tasks?state=bogus", None, 400, "state"),
        ("list limit=0", get, "/tasks?limit=0", None, 400, "limit"),
        ("list limit=1001", get, "/tasks?limit=1001", None, 400, "limit"),
        ("list after=-1", get, "/tasks?after=-1", None, 400, "after"),
        ("list unknown filter", get, "/tasks?colour=red", None, 400, "colour"),
        ("get /tasks/abc", get, "/tasks/abc", None, 400, "id"),
        ("get unknown task", get, f"/tasks/{10**9}", None, 404, None),
        ("cancel unknown task", post, f"/tasks/{10**9}/cancel", b"", 404, None),
        ("cancel twice", post, f"/tasks/{existing}/cancel", b"", 409, None),
    ]


def _three_peers(cluster_factory: ClusterFactory) -> tuple[Cluster, int, int]:
    """A settled cluster of three, its leader (the highest id) and its lowest follower."""
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader(expected=max(cluster.ids), timeout=START_TIMEOUT)
    return cluster, leader, min(n for n in cluster.ids if n != leader)


def test_bad_requests_to_a_follower_are_refused_and_change_nothing(
    cluster_factory: ClusterFactory,
) -> None:
    cluster, leader, follower = _three_peers(cluster_factory)

    # A task to cancel twice: the first cancel is a legal write, made before the snapshot.
    parked = {"kind": "echo", "key": "k", "delay": 3600}  # never runs before the cancel
    status, data = request_once(cluster, follower, "POST", "/tasks", _body(parked))
    assert status == 201, data
    task_id = json.loads(data)["id"]
    status, data = request_once(cluster, follower, "POST", f"/tasks/{task_id}/cancel", b"")
    assert status == 200 and json.loads(data)["state"] == "cancelled", data
    _wait_settled(cluster)
    before = _snapshot(cluster)

    for what, method, path, body, expected, name in _bad_requests(task_id):
        status, data = request_once(cluster, follower, method, path, body)
        assert status == expected, f"{what}: {method} {path} -> {status} {data[:300]!r}"
        error = json.loads(data)["error"]
        assert isinstance(error["code"], str) and error["code"], f"{what}: {error}"
        assert isinstance(error["message"], str) and error["message"], f"{what}: {error}"
        if name is not None:
            assert name in error["message"], f"{what}: the error does not name {name!r}: {error}"
        if expected == 400:
            assert name is not None and name in error.get("field", ""), f"{what}: {error}"

    # Settle: a refused write that slipped through would show on some peer within a few
    # heartbeats as a longer log, a higher commit index or another task count.
    def unchanged() -> None:
        assert _snapshot(cluster) == before, cluster.describe()

    _hold(10 * cluster.config.heartbeat_interval, unchanged)
    assert cluster.agreed_leader() == leader


def test_a_field_refused_by_the_leader_is_named_in_the_header_by_the_follower_asked(
    cluster_factory: ClusterFactory,
) -> None:
    # an unknown dependency is only found out on the leader; the follower forwards the
    # write and must still answer with the field in the body and in X-Error-Field
    cluster, leader, follower = _three_peers(cluster_factory)
    node = cluster.config.node(follower)
    conn = http.client.HTTPConnection(node.host, node.port, timeout=10)
    try:
        body = _body({"kind": "echo", "depends_on": [10**9]})
        conn.request("POST", "/tasks", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        error = json.loads(resp.read())["error"]
    finally:
        conn.close()
    assert resp.status == 400, error
    assert error["field"] == "depends_on" and resp.getheader("X-Error-Field") == "depends_on"
