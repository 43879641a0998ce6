"""Failover benchmark: how long a real local cluster is leaderless after its leader crashes.

    python bench/failover.py [--nodes 5] [--kills 10] [--idle 60] [--settle 1] [--json OUT]

Starts `--nodes` peers on free loopback ports with the timings of `cluster.toml` (via
`tests/harness.py`) and waits for a ready leader. Then, `--kills` times: SIGKILL the
leader; measure from the kill until every survivor names the same new leader and that
leader says it leads and is ready (polling `GET /cluster` every 5 ms); restart the killed
peer, wait until the cluster agrees on the highest id again, and let it run `--settle`
seconds (so each kill hits a settled leader, not one elected a moment ago). Then watches an idle
cluster for `--idle` seconds (polling every 50 ms) and counts leader and term changes,
which should be zero. Prints a table; `--json OUT` also writes every figure.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for `tests.harness`

from tests.harness import Cluster  # noqa: E402

FAILOVER_POLL = 0.005
IDLE_POLL = 0.05
START_TIMEOUT = 30.0
PHASE_TIMEOUT = 20.0


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


def measure_failover(cluster: Cluster, kill_no: int, settle: float) -> dict[str, Any]:
    old = cluster.wait_for_leader(timeout=PHASE_TIMEOUT)
    time.sleep(settle)  # a settled leader: views, heartbeats and backoffs in steady state
    old = cluster.wait_for_leader(old, timeout=PHASE_TIMEOUT)
    old_term = cluster.view(old)["term"]  # type: ignore[index]
    survivors = [n for n in cluster.running_ids() if n != old]
    wall = time.time()
    killed_at = time.perf_counter()
    cluster.kill(old)

    def new_leader() -> int | None:
        leader = cluster.agreed_leader(survivors)
        return leader if leader is not None and leader != old else None

    leader = cluster.wait_for(new_leader, PHASE_TIMEOUT, "a new leader", FAILOVER_POLL)
    failover = time.perf_counter() - killed_at
    new_term = cluster.view(leader)["term"]  # type: ignore[index]

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
        f"{'failover ms':>12} {'back ms':>8}"
    )
    for s in samples:
        terms = f"{s['old_term']}->{s['new_term']}"
        print(
            f"{s['kill']:>4} {s['killed_at']:>12} {s['killed']:>6} {s['new_leader']:>4} {terms:>9} "
            f"{s['failover_s'] * 1000:>12.0f} {s['restart_to_highest_s'] * 1000:>8.0f}"
        )
    if samples:
        times = [s["failover_s"] * 1000 for s in samples]
        print(
            f"failover ms: median {statistics.median(times):.0f}, "
            f"p90 {percentile(times, 0.9):.0f}, max {max(times):.0f}, min {min(times):.0f} "
            f"(n={len(times)}; 'back' = restart of the killed peer until it leads again)"
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


def summary(samples: list[dict[str, Any]]) -> dict[str, float] | None:
    if not samples:
        return None
    times = [s["failover_s"] for s in samples]
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
        "idle": idle,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.nodes < 3:
        print("error: --nodes must be at least 3 (a majority must survive a kill)")
        return 2
    own_dir = args.data_dir is None
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="bench-failover-"))
    try:
        result = run(args, data_dir)
    except AssertionError as exc:
        print(f"FAILED: {exc}\n(peer logs kept in {data_dir})", file=sys.stderr)
        return 1
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    if own_dir:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
