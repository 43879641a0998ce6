"""Ring 3: the task API on real peer processes, read and written only over public HTTP.

Chaos: eight clients submit keyed tasks to random peers while the leader is SIGKILLed
twice; every task a client saw acknowledged (200/201 with an id) must then be on every
peer exactly once under the id the client got, and must survive a SIGKILL of the whole
cluster. Bad input: every malformed or refused request sent to a follower gets its status
and an error body naming the field, and changes no peer's log, commit index or tasks.
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import ClusterFactory
from tests.harness import Cluster, View

START_TIMEOUT = 15.0  # cold start of five Python processes on a slow CI box, then election
FAILOVER_TIMEOUT = 10.0  # failure_timeout (0.5 s) plus election rounds, under client load
SETTLE_TIMEOUT = 15.0  # every peer applies everything once the writes stop
REQUEST_TIMEOUT = 5.0  # client side: submit_wait (2 s) plus a forward and a commit

CLIENTS = 8
MAX_SUBMITS_PER_CLIENT = 400  # bounds the run even if failover is fast and peers are quick
MAX_TRIES_PER_KEY = 25  # one key: the first submit plus retries with the same key
RETRY_WINDOW = 20.0  # seconds one key may be retried before the client gives up on it
LEADER_KILLS = 2
PHASE_SECONDS = 4.0  # client load before the first kill and after each restart
PHASE_ACKS = 60  # ... and at least this many new acknowledgements in each phase
MIN_ACKED = 200  # fewer means the run exercised too little to mean anything
PAGE = 1000  # GET /tasks limit maximum

Json = dict[str, Any]


# ---------------------------------------------------------------------------- HTTP


def _http(
    cluster: Cluster,
    n: int,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> tuple[int, bytes]:
    """One request on a fresh connection (never resent, unlike the harness's helper)."""
    node = cluster.config.node(n)
    conn = http.client.HTTPConnection(node.host, node.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _list_all(cluster: Cluster, n: int) -> list[Json]:
    """Every task peer `n` holds, paging through `GET /tasks` with the `next` cursor."""
    tasks: list[Json] = []
    path = f"/tasks?limit={PAGE}"
    for _ in range(10_000):  # bounded: far more pages than any run submits
        status, data = _http(cluster, n, "GET", path)
        assert status == 200, f"peer {n}: GET {path} -> {status} {data[:200]!r}"
        page = json.loads(data)
        assert len(page["tasks"]) <= PAGE
        tasks += page["tasks"]
        if page["next"] is None:
            return tasks
        path = f"/tasks?limit={PAGE}&after={page['next']}"
    raise AssertionError(f"peer {n}: GET /tasks never returned next=null")


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


# -------------------------------------------------------------------------- clients


@dataclass
class Ledger:
    """What the clients saw, shared between their threads (guarded by `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[str, int] = field(default_factory=dict)  # key -> id the client got
    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    gave_up: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


class Submitter(threading.Thread):
    """One client: submits `echo` tasks with unique keys to random peers, one at a time,
    retrying a failed submit with the same key on another random peer."""

    def __init__(
        self, number: int, cluster: Cluster, ledger: Ledger, stop: threading.Event
    ) -> None:
        super().__init__(name=f"submitter-{number}", daemon=True)
        self.number = number
        self.addresses = {
            n: (cluster.config.node(n).host, cluster.config.node(n).port) for n in cluster.ids
        }
        self.ledger = ledger
        self.stop = stop
        self.rng = random.Random(number)
        self.conns: dict[int, http.client.HTTPConnection] = {}

    def run(self) -> None:
        try:
            for i in range(MAX_SUBMITS_PER_CLIENT):
                if self.stop.is_set():
                    break
                self.submit(f"chaos-{self.number}-{i}", {"client": self.number, "i": i})
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            with self.ledger.lock:
                self.ledger.crashes.append(f"{self.name}: {exc!r}")
        finally:
            for conn in self.conns.values():
                conn.close()

    def submit(self, key: str, args: Json) -> None:
        body = json.dumps({"kind": "echo", "args": args, "key": key}).encode()
        deadline = time.monotonic() + RETRY_WINDOW
        for attempt in range(MAX_TRIES_PER_KEY):
            peer = self.rng.choice(list(self.addresses))
            status, data = self.post(peer, body)
            with self.ledger.lock:
                self.ledger.statuses[str(status)] += 1
            if status in (200, 201):
                self.record(key, peer, status, data)
                return
            if status is not None and status < 500:
                with self.ledger.lock:
                    self.ledger.unexpected.append(f"{key} at peer {peer}: {status} {data[:200]!r}")
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.5, 0.02 * 2**attempt) * (0.5 + self.rng.random()))
        with self.ledger.lock:
            self.ledger.gave_up.append(key)

    def record(self, key: str, peer: int, status: int, data: bytes) -> None:
        task = json.loads(data)
        with self.ledger.lock:
            if not isinstance(task.get("id"), int) or task.get("key") != key:
                self.ledger.unexpected.append(f"{key} at peer {peer}: {status} {data[:200]!r}")
            else:
                self.ledger.acked[key] = task["id"]

    def post(self, peer: int, body: bytes) -> tuple[int | None, bytes]:
        conn = self.conns.get(peer)
        if conn is None:
            host, port = self.addresses[peer]
            conn = self.conns[peer] = http.client.HTTPConnection(
                host, port, timeout=REQUEST_TIMEOUT
            )
        try:
            conn.request("POST", "/tasks", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            del self.conns[peer]
            return None, b""


def _load_for(cluster: Cluster, ledger: Ledger, seconds: float, new_acks: int) -> None:
    """Let the clients run for `seconds` and until `new_acks` more tasks are acknowledged."""
    target = ledger.count() + new_acks
    deadline = time.monotonic() + seconds
    cluster.wait_for(
        lambda: time.monotonic() >= deadline and ledger.count() >= target,
        seconds + FAILOVER_TIMEOUT,
        f"{new_acks} more acknowledged submits (have {ledger.count()})",
        interval=0.05,
    )


def _crash_leader(cluster: Cluster, ledger: Ledger) -> tuple[int, int]:
    """SIGKILL the ready leader, wait for the survivors' new ready leader, restart the dead
    one, wait until every peer agrees on a ready leader again, then keep the load on."""
    leader = cluster.wait_for_leader(timeout=FAILOVER_TIMEOUT)
    cluster.kill(leader)
    successor = cluster.wait_for_leader(ids=cluster.running_ids(), timeout=FAILOVER_TIMEOUT)
    assert successor != leader
    cluster.start(leader)
    cluster.wait_for_leader(timeout=START_TIMEOUT)
    _load_for(cluster, ledger, PHASE_SECONDS, PHASE_ACKS)
    return leader, successor


# ---------------------------------------------------------------------------- checks


def _check_tables(
    tables: dict[int, list[Json]], views: dict[int, View], acked: dict[str, int]
) -> dict[int, str]:
    """Each peer: ids 1..N, no key twice, every acknowledged key under the id the client
    got, counts matching `/cluster`; and all peers agree on the key of every id."""
    agreed: dict[int, str] = {}
    for n, tasks in sorted(tables.items()):
        ids = [t["id"] for t in tasks]
        assert ids == list(range(1, len(ids) + 1)), f"peer {n}: task ids are not 1..{len(ids)}"
        assert sum(views[n]["tasks"].values()) == len(tasks), f"peer {n}: counts != listing"
        keys = Counter(t["key"] for t in tasks)
        twice = sorted(k for k, c in keys.items() if c > 1)
        assert not twice, f"peer {n}: {len(twice)} keys appear more than once, e.g. {twice[:5]}"
        by_key = {t["key"]: t["id"] for t in tasks}
        lost = sorted(k for k in acked if k not in by_key)
        assert not lost, f"peer {n} lacks {len(lost)} acknowledged tasks, e.g. {lost[:5]}"
        moved = sorted((k, acked[k], by_key[k]) for k in acked if by_key[k] != acked[k])
        assert not moved, f"peer {n}: (key, acked id, id here) differ: {moved[:5]}"
        for t in tasks:  # the task behind each key is the one that client submitted
            _, client, i = t["key"].split("-")
            want = {"kind": "echo", "args": {"client": int(client), "i": int(i)}}
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

    ledger, stop = Ledger(), threading.Event()
    clients = [Submitter(c, cluster, ledger, stop) for c in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        _load_for(cluster, ledger, PHASE_SECONDS, PHASE_ACKS)
        crashes = [_crash_leader(cluster, ledger) for _ in range(LEADER_KILLS)]
    finally:
        stop.set()
        for client in clients:  # bounded: one key's retries end within RETRY_WINDOW
            client.join(RETRY_WINDOW + 2 * REQUEST_TIMEOUT)
    assert not any(c.is_alive() for c in clients), "a client did not stop"
    summary = (
        f"{len(ledger.acked)} acknowledged, {len(ledger.gave_up)} given up; crashes (killed,"
        f" successor) {crashes}; submit statuses {dict(ledger.statuses)}"
    )
    print(summary)
    assert not ledger.crashes, ledger.crashes
    assert not ledger.unexpected, f"{ledger.unexpected[:5]}; {summary}"
    assert len(ledger.acked) >= MIN_ACKED, f"only {len(ledger.acked)} acknowledged; {summary}"

    views = _wait_settled(cluster)
    assert cluster.running_ids() == list(cluster.ids), "a peer exited by itself"
    tables = {n: _list_all(cluster, n) for n in cluster.ids}
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
    tables = {n: _list_all(cluster, n) for n in cluster.ids}
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


def test_bad_requests_to_a_follower_are_refused_and_change_nothing(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader(expected=max(cluster.ids), timeout=START_TIMEOUT)
    follower = min(n for n in cluster.ids if n != leader)

    # A task to cancel twice: the first cancel is a legal write, made before the snapshot.
    parked = {"kind": "echo", "key": "k", "delay": 3600}  # never runs before the cancel
    status, data = _http(cluster, follower, "POST", "/tasks", _body(parked))
    assert status == 201, data
    task_id = json.loads(data)["id"]
    status, data = _http(cluster, follower, "POST", f"/tasks/{task_id}/cancel", b"")
    assert status == 200 and json.loads(data)["state"] == "cancelled", data
    _wait_settled(cluster)
    before = _snapshot(cluster)

    for what, method, path, body, expected, name in _bad_requests(task_id):
        status, data = _http(cluster, follower, method, path, body)
        assert status == expected, f"{what}: {method} {path} -> {status} {data[:300]!r}"
        error = json.loads(data)["error"]
        assert isinstance(error["code"], str) and error["code"], f"{what}: {error}"
        assert isinstance(error["message"], str) and error["message"], f"{what}: {error}"
        if name is not None:
            assert name in error["message"], f"{what}: the error does not name {name!r}: {error}"

    # Settle: a refused write that slipped through would show on some peer within a few
    # heartbeats as a longer log, a higher commit index or another task count.
    def unchanged() -> None:
        assert _snapshot(cluster) == before, cluster.describe()

    _hold(10 * cluster.config.heartbeat_interval, unchanged)
    assert cluster.agreed_leader() == leader
