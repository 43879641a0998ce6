"""Failover benchmark: how long a real local cluster is leaderless after its leader crashes.

    python bench/failover.py [--nodes 5] [--kills 10] [--idle 60] [--settle 1] [--json OUT]

Starts `--nodes` peers on free loopback ports with the timings of `cluster.toml` (via
`tests/harness.py`) and waits for a ready leader. Then, `--kills` times: SIGKILL the
leader; measure from the kill until every survivor names the same new leader and that
leader says it leads and is ready (polling `GET /cluster` every 5 ms), and, from another
thread, until a write is accepted (a parked task POSTed to the survivors in turn, each
request on a new connection, until one answers 2xx); restart the killed
peer, wait until the cluster agrees on the highest id again, and let it run `--settle`
seconds (so each kill hits a settled leader, not one elected a moment ago). Then watches an idle
cluster for `--idle` seconds (polling every 50 ms) and counts leader and term changes,
which should be zero. Prints a table; `--json OUT` also writes every figure.

`measure_failover`, `watch_idle` and `summary` are also used by `bench/run.py`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for `tests.harness`

from cli_run import run_in_data_dir  # noqa: E402

from tests.harness import Cluster  # noqa: E402

FAILOVER_POLL = 0.005
IDLE_POLL = 0.05
START_TIMEOUT = 30.0
PHASE_TIMEOUT = 20.0
WRITE_POLL = 0.005  # seconds between refused write attempts
WRITE_TIMEOUT = 5.0  # one write attempt (a peer holds a write up to `submit_wait`)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5, help="peers in the cluster (5)")
    parser.add_argument("--kills", type=int, default=10, help="leader crashes to measure (10)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle watch (60)")
    parser.add_argument(
        "--settle", type=float, default=1.0, help="seconds between recovery and next kill (1)"
    )
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    parser.add_argument("--data-dir", help="keep config and peer logs here (default: a tmp dir)")
    return parser


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with `fraction` of samples at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


class WriteProbe(threading.Thread):
    """POSTs a parked task to `peers` in turn until one is acknowledged; notes when."""

    def __init__(self, cluster: Cluster, peers: list[int], tag: int) -> None:
        super().__init__(daemon=True)
        self.nodes = [cluster.config.node(n) for n in peers]
        self.body = json.dumps({"kind": "echo", "args": tag, "delay": 86400}).encode()
        self.accepted_at: float | None = None
        self.accepted_by: int | None = None
        self.attempts = 0
        self.done = threading.Event()

    def run(self) -> None:
        deadline = time.perf_counter() + PHASE_TIMEOUT
        while not self.done.is_set() and time.perf_counter() < deadline:
            node = self.nodes[self.attempts % len(self.nodes)]
            self.attempts += 1
            if self._post(node.host, node.port) in (200, 201):
                self.accepted_at, self.accepted_by = time.perf_counter(), node.id
                return
            self.done.wait(WRITE_POLL)

    def _post(self, host: str, port: int) -> int | None:
        conn = http.client.HTTPConnection(host, port, timeout=WRITE_TIMEOUT)
        try:
            headers = {"Content-Type": "application/json"}
            conn.request("POST", "/tasks", body=self.body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()


def measure_failover(cluster: Cluster, kill_no: int, settle: float) -> dict[str, Any]:
    """Kill the settled leader; time a new agreed ready leader and an accepted write."""
    old = cluster.wait_for_leader(timeout=PHASE_TIMEOUT)
    time.sleep(settle)  # a settled leader: views, heartbeats and backoffs in steady state
    old = cluster.wait_for_leader(old, timeout=PHASE_TIMEOUT)
    old_term = cluster.view(old)["term"]  # type: ignore[index]
    survivors = [n for n in cluster.running_ids() if n != old]
    wall = time.time()
    probe = WriteProbe(cluster, survivors, kill_no)
    killed_at = time.perf_counter()
    cluster.kill(old)
    probe.start()

    def new_leader() -> int | None:
        leader = cluster.agreed_leader(survivors)
        return leader if leader is not None and leader != old else None

    leader = cluster.wait_for(new_leader, PHASE_TIMEOUT, "a new leader", FAILOVER_POLL)
    failover = time.perf_counter() - killed_at
    new_term = cluster.view(leader)["term"]  # type: ignore[index]
    probe.join(PHASE_TIMEOUT)
    probe.done.set()
    write = None if probe.accepted_at is None else probe.accepted_at - killed_at

    restarted_at = time.perf_counter()
    cluster.restart(old)
    top = max(cluster.ids)
    cluster.wait_for_leader(top, timeout=PHASE_TIMEOUT)
    recovery = time.perf_counter() - restarted_at
    return {
        "kill": kill_no,
        "killed": old,
        "killed_at": time.strftime("%H:%M:%S", time.localtime(wall))
        + f".{int(wall % 1 * 1000):03d}",
        "old_term": old_term,
        "new_leader": leader,
        "new_term": new_term,
        "failover_s": failover,
        "write_accepted_s": write,
        "write_accepted_by": probe.accepted_by,
        "write_attempts": probe.attempts,
        "restart_to_highest_s": recovery,
    }


def watch_idle(cluster: Cluster, seconds: float) -> dict[str, Any]:
    """Poll every peer; count changes of any peer's reported leader and term."""
    last: dict[int, tuple[int | None, int]] = {}
    leader_changes = term_changes = unreachable = leaderless = polls = 0
    events: list[str] = []
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        polls += 1
        for n, view in cluster.views().items():
            if view is None:
                unreachable += 1
                continue
            now = (view["leader"], view["term"])
            if view["leader"] is None:
                leaderless += 1
            before = last.get(n)
            if before is not None and before != now:
                leader_changes += before[0] != now[0]
                term_changes += before[1] != now[1]
                events.append(f"t={elapsed:.2f}s peer {n}: leader/term {before} -> {now}")
            last[n] = now
        time.sleep(max(0.0, IDLE_POLL - (time.monotonic() - start - elapsed)))
    return {
        "seconds": seconds,
        "polls": polls,
        "leader_changes": leader_changes,
        "term_changes": term_changes,
        "leaderless_views": leaderless,
        "unreachable_views": unreachable,
        "final": {n: {"leader": lt[0], "term": lt[1]} for n, lt in last.items()},
        "events": events[:50],
    }


def print_report(samples: list[dict[str, Any]], idle: dict[str, Any] | None) -> None:
    print(
        f"{'kill':>4} {'at':>12} {'killed':>6} {'new':>4} {'term':>9} "
        f"{'failover ms':>12} {'write ms':>9} {'back ms':>8}"
    )
    for s in samples:
        terms = f"{s['old_term']}->{s['new_term']}"
        write = "-" if s["write_accepted_s"] is None else f"{s['write_accepted_s'] * 1000:.0f}"
        print(
            f"{s['kill']:>4} {s['killed_at']:>12} {s['killed']:>6} {s['new_leader']:>4} {terms:>9} "
            f"{s['failover_s'] * 1000:>12.0f} {write:>9} {s['restart_to_highest_s'] * 1000:>8.0f}"
        )
    if samples:
        times = [s["failover_s"] * 1000 for s in samples]
        print(
            f"failover ms: median {statistics.median(times):.0f}, "
            f"p90 {percentile(times, 0.9):.0f}, max {max(times):.0f}, min {min(times):.0f} "
            f"(n={len(times)}; 'back' = restart of the killed peer until it leads again)"
        )
        writes = summary(samples, "write_accepted_s")
        if writes is not None:
            print(
                f"write accepted ms: median {writes['median_s'] * 1000:.0f}, "
                f"p90 {writes['p90_s'] * 1000:.0f}, max {writes['max_s'] * 1000:.0f}"
            )
    if idle is not None:
        print(
            f"idle {idle['seconds']:.0f}s, {idle['polls']} polls: "
            f"leader changes {idle['leader_changes']}, term changes {idle['term_changes']}, "
            f"leaderless views {idle['leaderless_views']}, "
            f"unreachable views {idle['unreachable_views']}"
        )
        for event in idle["events"]:
            print(f"  {event}")


def summary(samples: list[dict[str, Any]], key: str = "failover_s") -> dict[str, float] | None:
    """Median, p90, max and min of `key` over the samples that have it; None if none do."""
    times = [s[key] for s in samples if s.get(key) is not None]
    if not times:
        return None
    return {
        "median_s": statistics.median(times),
        "p90_s": percentile(times, 0.9),
        "max_s": max(times),
        "min_s": min(times),
    }


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    with Cluster(args.nodes, data_dir) as cluster:
        config = cluster.config
        print(
            f"{args.nodes} peers, heartbeat {config.heartbeat_interval}s, suspect "
            f"{config.suspect_after}s, failure {config.failure_timeout}s, election "
            f"{config.election_timeout}s; logs in {data_dir}"
        )
        started = time.perf_counter()
        cluster.start_all()
        cluster.wait_for_leader(max(cluster.ids), timeout=START_TIMEOUT)
        print(f"cold start to agreed leader: {time.perf_counter() - started:.2f}s")
        samples = []
        for kill_no in range(1, args.kills + 1):
            samples.append(measure_failover(cluster, kill_no, args.settle))
        idle = watch_idle(cluster, args.idle) if args.idle > 0 else None
    print_report(samples, idle)
    timings = ("heartbeat_interval", "suspect_after", "failure_timeout", "election_timeout")
    return {
        "nodes": args.nodes,
        "settle_s": args.settle,
        "timings": {name: getattr(config, name) for name in timings},
        "samples": samples,
        "failover": summary(samples),
        "write_accepted": summary(samples, "write_accepted_s"),
        "idle": idle,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_in_data_dir(args, run, "bench-failover-")


if __name__ == "__main__":
    raise SystemExit(main())
