"""Ring 3: schemathesis against a real 3-peer cluster, driven by the document the leader
serves at `/openapi.json`.

Every documented operation but the endless `/events` gets its schema examples, then a
fixed number of valid and of invalid requests (seeded: the same requests every run, no
shrinking), sent one at a time. Each answer must come within `REQUEST_TIMEOUT`, never be
a 5xx, and match the document (status code, content type, body schema); an invalid
request must be refused. Every refused request and every read must leave every peer's
log position (`last_index`, `commit_index`) and task counts exactly as they were. After
an accepted write the cluster is brought back to rest (schedules paused, peers
undrained, tasks finished) so the next comparison starts from a still state.

Valid requests are tamed where their values would only make the cluster busy: task
kinds become `echo` (an unknown kind is a 400 the invalid requests exercise anyway),
`delay` and `?wait` are kept under a second, `timeout` long and `max_attempts` 1.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import HypothesisException
from hypothesis.strategies import SearchStrategy
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from peer.tokens import AuthConfig
from tests.conftest import ClusterFactory
from tests.harness import Cluster

EXAMPLES = 10  # per operation and generation mode: valid, then invalid
REQUEST_TIMEOUT = 5.0  # seconds: the longest a peer may take to answer (submit_wait is 2)
SETTLE_TIMEOUT = 10.0  # seconds for the cluster to come to rest after an accepted write
SHORT = 0.2  # seconds: the longest `delay` or `?wait` a valid request keeps
# an endless stream; and the membership changes, which would change who votes under the
# fuzzer's feet (tests/test_processes_membership.py checks their bad input instead)
EXCLUDED = {"GET /events", "POST /members", "DELETE /members/{peer}"}
TOKEN = "fuzz-" + "f" * 28  # an admin token: the fuzzer may do anything a client may
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
BUSY = ("queued", "scheduled", "running")
State = dict[int, tuple[Any, ...]]


def tame_spec(spec: Any) -> None:
    """A valid task spec made quick and quiet (its kind `echo`), in place."""
    if not isinstance(spec, dict):
        return
    spec["kind"] = "echo"
    spec.pop("args", None)
    if isinstance(spec.get("delay"), int | float):
        spec["delay"] = min(spec["delay"], SHORT)
    if isinstance(spec.get("timeout"), int | float):
        spec["timeout"] = max(spec["timeout"], 30.0)
    if "max_attempts" in spec:
        spec["max_attempts"] = 1


def tame(case: Case) -> None:
    """Keep a valid request's long-poll and the work it submits short."""
    label = f"{case.method.upper()} {case.path}"
    body = case.body if isinstance(case.body, dict) else None
    if label == "POST /tasks":
        tame_spec(body)
    elif label == "POST /tasks/batch" and body and isinstance(body.get("tasks"), list):
        for spec in body["tasks"]:
            tame_spec(spec)
    elif label == "POST /schedules" and body:
        tame_spec(body.get("task"))
    if case.query and isinstance(case.query.get("wait"), int | float):
        case.query["wait"] = min(case.query["wait"], SHORT)


class Fuzzer:
    """Sends cases to one peer, checks each answer and every peer's state around it."""

    def __init__(self, cluster: Cluster, target: int) -> None:
        self.cluster = cluster
        self.base_url = cluster.url(target)
        self.session = requests.Session()
        self.calls: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.failures: list[str] = []
        self.state = self.settle()

    def snapshot(self) -> State:
        """Each peer's (last_index, commit_index, task counts by state, drained peers)."""
        out: State = {}
        for n in self.cluster.ids:
            view = self.cluster.view(n)
            if view is None:
                out[n] = ("unreachable",)
                continue
            drained = tuple(m["id"] for m in view["members"] if m["drained"])
            out[n] = (view["last_index"], view["commit_index"], view["tasks"], drained)
        return out

    def exercise(self, case: Case) -> None:
        label = f"{case.method.upper()} {case.path}"
        mode = case.meta.generation.mode if case.meta else GenerationMode.POSITIVE
        if mode == GenerationMode.POSITIVE:
            tame(case)
        self.calls[label] += 1
        sent = time.monotonic()
        try:
            response = case.call(
                base_url=self.base_url,
                session=self.session,
                timeout=REQUEST_TIMEOUT,
            )
        except requests.RequestException as exc:
            self.fail(case, f"no answer within {REQUEST_TIMEOUT}s: {exc!r}")
            self.state = self.settle()
            return
        took = time.monotonic() - sent
        if took > REQUEST_TIMEOUT:
            self.fail(case, f"answered after {took:.1f}s")
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # how schemathesis reports failures
            self.fail(case, f"{response.status_code}: {str(exc).strip()[:1500]}")
        if 200 <= response.status_code < 300 and case.method.upper() != "GET":
            self.accepted[label] += 1
            self.state = self.settle()
            return
        after = self.snapshot()
        if after != self.state:
            self.fail(case, f"{response.status_code} but the state moved: {self.state} -> {after}")
            self.state = self.settle()

    def fail(self, case: Case, what: str) -> None:
        request = f"{case.method.upper()} {case.formatted_path} {case.query} {case.body!r}"
        self.failures.append(f"{request[:600]}\n    {what}")

    def settle(self) -> State:
        """Bring the cluster to rest (schedules paused, peers undrained, no task busy, every
        peer at the same applied index) and return its state."""
        self.calm_leader()
        last: State = {}

        def at_rest() -> State | None:
            nonlocal last
            state = self.snapshot()
            positions = {(s[0], s[1], json.dumps(s[2])) for s in state.values() if len(s) == 4}
            still = state == last
            last = state
            idle = all(
                len(s) == 4 and s[0] == s[1] and not any(s[2].get(b) for b in BUSY) and not s[3]
                for s in state.values()
            )
            return state if idle and still and len(positions) == 1 else None

        return self.cluster.wait_for(at_rest, SETTLE_TIMEOUT, "the cluster at rest", 0.05)

    def calm_leader(self) -> None:
        """Pause every running schedule and undrain every drained peer, through the API."""
        leader = self.cluster.wait_for_leader(timeout=SETTLE_TIMEOUT)
        answer = self.cluster.request(leader, "GET", "/schedules")
        schedules = json.loads(answer[1])["schedules"] if answer and answer[0] == 200 else []
        for schedule in schedules:
            if not schedule["paused"]:
                path = f"/schedules/{requests.utils.quote(schedule['name'], safe='')}/pause"
                self.cluster.request(leader, "POST", path, timeout=3)
        view = self.cluster.view(leader) or {"members": []}
        for member in view["members"]:
            if member["drained"]:
                path = f"/members/{member['id']}/undrain"
                self.cluster.request(leader, "POST", path, timeout=3)

    def run(self, strategy: SearchStrategy[Case], examples: int) -> None:
        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=(Phase.explicit, Phase.generate),
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def send(case: Case) -> None:
            self.exercise(case)

        send()


# Hand-picked requests the generator rarely makes: ids of non-ASCII digits ("²" passes
# `str.isdigit` but not `int`), a CR/LF in a parameter name. Each must be a 4xx.
HOSTILE = [
    ("GET", "/tasks/%C2%B2"),
    ("POST", "/tasks/%C2%B2/cancel"),
    ("POST", "/tasks/%C2%B2/retry"),
    ("POST", "/members/%C2%B2/drain"),
    ("GET", "/tasks?limit=%C2%B2"),
    ("GET", "/tasks?a%0D%0Ab=1"),
    ("GET", "/tasks/1?wait=%C2%B2"),
]


def send_hostile(fuzzer: Fuzzer, target: int) -> None:
    for method, path in HOSTILE:
        fuzzer.calls[f"hand-picked {method}"] += 1
        answer = fuzzer.cluster.request(target, method, path, timeout=REQUEST_TIMEOUT)
        if answer is None or not 400 <= answer[0] < 500:
            status = "no answer" if answer is None else answer[0]
            fuzzer.failures.append(f"{method} {path}\n    {status}, not a 4xx")
        elif fuzzer.snapshot() != fuzzer.state:
            fuzzer.failures.append(f"{method} {path}\n    {answer[0]} but the state moved")


def strategies(schema: Any, operation: Any) -> list[tuple[SearchStrategy[Case], int]]:
    """The operation's schema examples (once each), then valid and invalid requests."""
    out = [(s, 1) for s in schema.get_strategies_from_examples(operation)]
    out.append((operation.as_strategy(generation_mode=GenerationMode.POSITIVE), EXAMPLES))
    if len(operation.body) or any(True for _ in operation.iter_parameters()):
        out.append((operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), EXAMPLES))
    return out


def test_the_api_survives_its_own_contract_fuzzed(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(3, start=False, auth=AuthConfig().with_token("fuzz", "admin", TOKEN))
    cluster.token = TOKEN  # the harness's own reads and calming writes
    cluster.start_all()
    leader = cluster.wait_for_leader(timeout=20)
    answer = cluster.request(leader, "GET", "/openapi.json", timeout=3)
    assert answer is not None and answer[0] == 200
    config = schemathesis.Config.from_dict({"auth": {"openapi": {"bearerAuth": {"bearer": TOKEN}}}})
    schema = schemathesis.openapi.from_dict(json.loads(answer[1]), config=config)
    operations = [r.ok() for r in schema.get_all_operations()]
    fuzzer = Fuzzer(cluster, leader)
    started = time.monotonic()
    skipped: list[str] = []
    for operation in operations:
        if operation.label in EXCLUDED:
            continue
        for strategy, examples in strategies(schema, operation):
            try:
                fuzzer.run(strategy, examples)
            except HypothesisException as exc:  # nothing to generate for this mode
                skipped.append(f"{operation.label}: {type(exc).__name__}")
    send_hostile(fuzzer, leader)
    took = time.monotonic() - started
    documented = {op.label for op in operations} - EXCLUDED
    exercised = {label for label in fuzzer.calls if not label.startswith("hand-picked")}
    total = sum(fuzzer.calls[label] for label in exercised)
    print(
        f"\nschemathesis: {len(exercised)} operations x {total / max(1, len(exercised)):.1f} "
        f"requests = {total} ({sum(fuzzer.accepted.values())} accepted writes), "
        f"+ {len(HOSTILE)} hand-picked, in {took:.1f}s: {len(fuzzer.failures)} failures"
    )
    for label in sorted(exercised):
        print(
            f"  {label}: {fuzzer.calls[label]} requests, {fuzzer.accepted[label]} accepted writes"
        )
    if skipped:
        print("  not generated: " + "; ".join(skipped))
    assert exercised == documented, "every operation was exercised"
    assert not fuzzer.failures, f"{len(fuzzer.failures)} failures:\n" + "\n".join(fuzzer.failures)
