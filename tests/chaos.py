"""Ring 3 chaos load: the client side shared by the chaos tests of the task API.

Owns the chaos client and what it needs. `Submitter` threads submit keyed `echo` tasks
to random peers over kept-alive connections, each at a bounded pace, and retry a submit
that got no answer or a 5xx with the same key on another random peer; the `Ledger`
records what they saw acknowledged. `run_chaos` puts a `Load` on a running cluster in
phases (each at least `phase_seconds` long and `phase_acks` acknowledgements big),
SIGKILLs and restarts the leader between them, stops the clients and checks the ledger;
`check_listing` holds the checks every chaos test makes of each peer's task list. Also
the plain one-shot request (`request_once`), `list_all`, and the bounds both task test
files use.

The phases, not a per-client budget, decide how many tasks a run submits: a fast
cluster gets the same pace as a slow one. Two safety bounds stop a run that goes wrong,
`RUN_TIME_LIMIT` and a count cap a paced client cannot reach within it; hitting either
fails the run with a message naming the bound, never as a shortfall of acknowledgements.

Talks to the peers only through the public HTTP API and `Cluster`; it does not start or
stop clusters (the fixture does) and makes no test-specific check of what peers hold.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tests.harness import Cluster

START_TIMEOUT = 15.0  # cold start of five Python processes on a slow CI box, then election
FAILOVER_TIMEOUT = 10.0  # failure_timeout (0.5 s) plus election rounds, under client load
REQUEST_TIMEOUT = 5.0  # client side: submit_wait (2 s) plus a forward and a commit
PAGE = 1000  # GET /tasks limit maximum

MAX_TRIES_PER_KEY = 25  # one key: the first submit plus retries with the same key
RETRY_WINDOW = 20.0  # seconds one key may be retried before the client gives up on it
LEADER_KILLS = 2
RUN_TIME_LIMIT = 60.0  # load plus kills; a healthy run takes ~15 s, the test timeout is 120 s
BOUND_HIT = "the chaos load's own safety bound, not the cluster, stopped clients: "

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Load:
    """How hard one chaos run pushes; every bound here is checked or enforced. Clients
    are paced, not budgeted: the phases decide how many keys a run submits."""

    key_prefix: str  # keys are `{key_prefix}-{client}-{i}`, so no "-" in the prefix
    clients: int
    pace: float  # new keys per second per client at most, however quick the cluster
    phase_seconds: float  # client load before the first kill and after each restart
    phase_acks: int  # ... and at least this many new acknowledgements in each phase
    min_acked: int  # fewer means the run exercised too little to mean anything

    @property
    def max_submits_per_client(self) -> int:
        """The count cap: one more key than a client at `pace` starts in RUN_TIME_LIMIT,
        so a paced client meets the time limit first and the cap is a backstop only."""
        return math.ceil(self.pace * RUN_TIME_LIMIT) + 1


# ---------------------------------------------------------------------------- HTTP


def request_once(
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


def list_all(cluster: Cluster, n: int) -> list[Json]:
    """Every task peer `n` holds, paging through `GET /tasks` with the `next` cursor."""
    tasks: list[Json] = []
    path = f"/tasks?limit={PAGE}"
    for _ in range(10_000):  # bounded: far more pages than any run submits
        status, data = request_once(cluster, n, "GET", path)
        assert status == 200, f"peer {n}: GET {path} -> {status} {data[:200]!r}"
        page = json.loads(data)
        assert len(page["tasks"]) <= PAGE
        tasks += page["tasks"]
        if page["next"] is None:
            return tasks
        path = f"/tasks?limit={PAGE}&after={page['next']}"
    raise AssertionError(f"peer {n}: GET /tasks never returned next=null")


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
    bounded: list[str] = field(default_factory=list)  # clients a safety bound stopped

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def note(self, entries: list[str], entry: str) -> None:
        """Append `entry` to one of this ledger's lists, under the lock."""
        with self.lock:
            entries.append(entry)


def submitted_args(key: str) -> Json:
    """The `args` a `Submitter` sent with `key` (`{prefix}-{client}-{i}`)."""
    _, client, i = key.split("-")
    return {"client": int(client), "i": int(i)}


class Submitter(threading.Thread):
    """One client: submits `echo` tasks with unique keys to random peers, one at a time
    and at most `load.pace` new keys a second, retrying a failed submit with the same key
    on another random peer, until `stop` is set (or a safety bound stops it)."""

    def __init__(
        self,
        number: int,
        cluster: Cluster,
        ledger: Ledger,
        stop: threading.Event,
        load: Load,
        deadline: float,
    ) -> None:
        super().__init__(name=f"submitter-{number}", daemon=True)
        self.number = number
        self.addresses = {
            n: (cluster.config.node(n).host, cluster.config.node(n).port) for n in cluster.ids
        }
        self.ledger = ledger
        self.stop = stop
        self.load = load
        self.deadline = deadline  # time.monotonic() after which no new key is started
        self.rng = random.Random(number)
        self.conns: dict[int, http.client.HTTPConnection] = {}

    def run(self) -> None:
        try:
            self.submit_paced()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            self.ledger.note(self.ledger.crashes, f"{self.name}: {exc!r}")
        finally:
            for conn in self.conns.values():
                conn.close()

    def submit_paced(self) -> None:
        """Start key i no sooner than 1/pace s after key i-1 started (the first at a random
        offset, so the clients are out of step); return when `stop` is set."""
        interval = 1.0 / self.load.pace
        next_start = time.monotonic() + self.rng.random() * interval
        cap = self.load.max_submits_per_client
        for i in range(cap):
            if self.stop.wait(max(0.0, next_start - time.monotonic())):
                return
            if time.monotonic() >= self.deadline:
                bound = f"{self.name}: RUN_TIME_LIMIT ({RUN_TIME_LIMIT:.0f} s) passed"
                self.ledger.note(self.ledger.bounded, bound)
                return
            next_start = time.monotonic() + interval
            self.submit(
                f"{self.load.key_prefix}-{self.number}-{i}", {"client": self.number, "i": i}
            )
        self.ledger.note(self.ledger.bounded, f"{self.name}: submit cap ({cap}) reached")

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
        """An acknowledgement counts only as a JSON task with an integer id and this key."""
        try:
            task = json.loads(data)
        except ValueError:
            task = None
        with self.ledger.lock:
            if (
                not isinstance(task, dict)
                or not isinstance(task.get("id"), int)
                or task.get("key") != key
            ):
                self.ledger.unexpected.append(f"{key} at peer {peer}: {status} {data[:200]!r}")
            else:
                self.ledger.acked[key] = task["id"]

    def post(self, peer: int, body: bytes) -> tuple[int | None, bytes]:
        """POST /tasks on the kept-alive connection to `peer`; (None, b"") if no answer."""
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


# ---------------------------------------------------------------------------- chaos


class Phase(NamedTuple):
    """One stretch of load between kills, as it went."""

    seconds: float
    acks: int  # new acknowledgements during it


def load_phase(cluster: Cluster, ledger: Ledger, load: Load) -> Phase:
    """Keep the load on until at least `load.phase_seconds` have passed and at least
    `load.phase_acks` more tasks have been acknowledged (both), or fail: the phase took
    FAILOVER_TIMEOUT longer than that, or a safety bound stopped a client."""
    started, start_count = time.monotonic(), ledger.count()
    done_at = started + load.phase_seconds

    def done() -> bool:
        if ledger.bounded:  # fails below, naming the bound
            return True
        return time.monotonic() >= done_at and ledger.count() - start_count >= load.phase_acks

    try:
        cluster.wait_for(
            done,
            load.phase_seconds + FAILOVER_TIMEOUT,
            f"{load.phase_acks} new acks",
            interval=0.05,
        )
    except AssertionError as exc:
        got, total = ledger.count() - start_count, ledger.count()
        raise AssertionError(
            f"phase got {got} of {load.phase_acks} new acks ({total} in all): {exc}"
        ) from None
    assert not ledger.bounded, BOUND_HIT + str(ledger.bounded)
    return Phase(round(time.monotonic() - started, 1), ledger.count() - start_count)


def crash_leader(cluster: Cluster) -> tuple[int, int]:
    """SIGKILL the ready leader, wait for the survivors' new ready leader, restart the dead
    one and wait until every peer agrees on a ready leader again."""
    leader = cluster.wait_for_leader(timeout=FAILOVER_TIMEOUT)
    cluster.kill(leader)
    successor = cluster.wait_for_leader(ids=cluster.running_ids(), timeout=FAILOVER_TIMEOUT)
    assert successor != leader
    cluster.start(leader)
    cluster.wait_for_leader(timeout=START_TIMEOUT)
    return leader, successor


class ChaosRun(NamedTuple):
    """What `run_chaos` leaves for the test's own checks."""

    ledger: Ledger
    crashes: list[tuple[int, int]]  # (killed, successor) per leader kill
    summary: str


def run_chaos(cluster: Cluster, load: Load) -> ChaosRun:
    """Put `load` on the running `cluster` for a phase, then LEADER_KILLS times SIGKILL
    (and restart) its leader and load it for another phase; stop the clients and check
    what they saw: no client crashed or met a safety bound, no answer was unexpected, at
    least `load.min_acked` submits were acknowledged. Prints the summary line
    (bench/chaos_loop.py looks for it)."""
    ledger, stop = Ledger(), threading.Event()
    deadline = time.monotonic() + RUN_TIME_LIMIT
    clients = [Submitter(c, cluster, ledger, stop, load, deadline) for c in range(load.clients)]
    for client in clients:
        client.start()
    crashes: list[tuple[int, int]] = []
    try:
        phases = [load_phase(cluster, ledger, load)]
        for _ in range(LEADER_KILLS):
            crashes.append(crash_leader(cluster))
            phases.append(load_phase(cluster, ledger, load))
    finally:
        stop.set()
        for client in clients:  # bounded: one key's retries end within RETRY_WINDOW
            client.join(RETRY_WINDOW + 2 * REQUEST_TIMEOUT)
    assert not any(c.is_alive() for c in clients), "a client did not stop"
    summary = (
        f"{len(ledger.acked)} acknowledged, {len(ledger.gave_up)} given up; crashes (killed,"
        f" successor) {crashes}; phases (s, new acks) {[tuple(p) for p in phases]};"
        f" submit statuses {dict(ledger.statuses)}"
    )
    print(summary)
    assert not ledger.crashes, ledger.crashes
    assert not ledger.bounded, BOUND_HIT + str(ledger.bounded)
    assert not ledger.unexpected, f"{ledger.unexpected[:5]}; {summary}"
    assert len(ledger.acked) >= load.min_acked, f"only {len(ledger.acked)} acknowledged; {summary}"
    return ChaosRun(ledger, crashes, summary)


def check_listing(n: int, tasks: list[Json], acked: dict[str, int]) -> dict[str, Json]:
    """Peer `n`'s task list: ids 1..N, no key twice, every acknowledged key present under
    the id its client got. Returns the tasks by key."""
    ids = [t["id"] for t in tasks]
    assert ids == list(range(1, len(ids) + 1)), f"peer {n}: task ids are not 1..{len(ids)}"
    keys = Counter(t["key"] for t in tasks)
    twice = sorted(k for k, c in keys.items() if c > 1)
    assert not twice, f"peer {n}: {len(twice)} keys appear more than once, e.g. {twice[:5]}"
    by_key = {t["key"]: t for t in tasks}
    lost = sorted(k for k in acked if k not in by_key)
    assert not lost, f"peer {n} lacks {len(lost)} acknowledged tasks, e.g. {lost[:5]}"
    moved = sorted((k, i, by_key[k]["id"]) for k, i in acked.items() if by_key[k]["id"] != i)
    assert not moved, f"peer {n}: (key, acked id, id here) differ: {moved[:5]}"
    return by_key
