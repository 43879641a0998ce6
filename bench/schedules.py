"""Periodic tasks through leader crashes: exactly once per tick, and how late ticks fire.

    python bench/schedules.py [--nodes 5] [--ticks 100] [--kills 5] [--json OUT]

Starts `--nodes` peers on free loopback ports (tests/harness.py), puts an every-1 s
schedule with `catch_up = "all"`, and while it runs SIGKILLs the leader `--kills` times,
spread over the run (each killed peer restarts and takes the lead back). Once `--ticks`
ticks have fired it pauses the schedule and reads every peer's tasks: the fired due
times must be exactly the ticks from the schedule's origin on (no gap, no duplicate, on
every peer). Each kill comes 0.2 s before a tick is due, so the failover spans it and
the next leader must fire it late. Lateness (a tick's submit time minus its due time,
written by the leader that fired it) is reported for ticks outside failovers (not
within 2 s after a kill) and for all.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for `tests.harness`

from cli_run import run_in_data_dir  # noqa: E402

from tests.chaos import list_all, request_once  # noqa: E402
from tests.harness import Cluster  # noqa: E402

EVERY = 1.0
START_TIMEOUT = 30.0
FAILOVER_WINDOW = 2.0  # seconds after a kill whose ticks count as "in a failover"
KILL_BEFORE_DUE = 0.8  # seconds after a tick that the leader is killed (0.2 s before the next)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--ticks", type=int, default=100, help="ticks to fire (100)")
    parser.add_argument("--kills", type=int, default=5, help="leader SIGKILLs (5)")
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--data-dir")
    return parser


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _schedule(cluster: Cluster, peer: int) -> dict[str, Any] | None:
    try:
        status, data = request_once(cluster, peer, "GET", "/schedules/tick")
    except OSError:
        return None
    return json.loads(data) if status == 200 else None


def _fired(cluster: Cluster) -> int:
    leader = cluster.agreed_leader()
    view = None if leader is None else _schedule(cluster, leader)
    return -1 if view is None else int(view["fired"])


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    cluster = Cluster(args.nodes, data_dir)
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader(timeout=START_TIMEOUT)
        body = {"name": "tick", "every": EVERY, "task": {"kind": "echo"}, "catch_up": "all"}
        status, data = request_once(
            cluster, leader, "POST", "/schedules", json.dumps(body).encode()
        )
        assert status == 201, data
        kills: list[float] = []
        spacing = args.ticks / (args.kills + 1)
        deadline = time.monotonic() + args.ticks * EVERY * 2 + 60
        while (fired := _fired(cluster)) < args.ticks:
            assert time.monotonic() < deadline, f"only {fired} ticks fired"
            if len(kills) < args.kills and fired >= spacing * (len(kills) + 1):
                leader = cluster.wait_for_leader(timeout=START_TIMEOUT)
                cluster.wait_for(lambda f=fired: _fired(cluster) > f, 5.0, "the next tick")
                time.sleep(KILL_BEFORE_DUE)  # the failover then spans the next due tick
                kills.append(time.time())
                cluster.kill(leader)
                cluster.wait_for_leader(timeout=START_TIMEOUT)
                cluster.restart(leader)
            time.sleep(0.1)
        leader = cluster.wait_for_leader(timeout=START_TIMEOUT)
        status, data = request_once(cluster, leader, "POST", "/schedules/tick/pause", b"")
        assert status == 200, data
        final = _schedule(cluster, leader)
        assert final is not None
        cluster.wait_for(
            lambda: all(
                (_schedule(cluster, n) or {}).get("fired") == final["fired"] for n in cluster.ids
            ),
            10.0,
            "every peer to apply the last tick",
        )
        return _check(cluster, final, kills)
    finally:
        cluster.stop_all()


def _check(cluster: Cluster, final: dict[str, Any], kills: list[float]) -> dict[str, Any]:
    expected = [round(final["created_at"] + k * EVERY, 6) for k in range(1, final["fired"] + 1)]
    per_peer = {}
    tasks: list[dict[str, Any]] = []
    for peer in cluster.ids:
        tasks = [t for t in list_all(cluster, peer) if t["schedule"] == "tick"]
        dues = sorted(round(t["due"], 6) for t in tasks)
        duplicates = len(dues) - len(set(dues))
        missing = len(set(expected) - set(dues))
        per_peer[peer] = {"ticks": len(dues), "duplicates": duplicates, "missing": missing}
        assert duplicates == 0 and missing == 0 and dues == expected, (peer, per_peer[peer])
    lateness = [t["lateness"] for t in tasks]
    calm = [
        t["lateness"] for t in tasks if not any(0 <= t["due"] - k < FAILOVER_WINDOW for k in kills)
    ]
    return {
        "ticks": final["fired"],
        "kills": len(kills),
        "per_peer": per_peer,
        "skipped": final["skipped"],
        "lateness_calm_ms": {
            "p50": percentile(calm, 0.5) * 1e3,
            "p99": percentile(calm, 0.99) * 1e3,
            "n": len(calm),
        },
        "lateness_all_ms": {
            "p50": percentile(lateness, 0.5) * 1e3,
            "p99": percentile(lateness, 0.99) * 1e3,
            "max": max(lateness) * 1e3,
        },
    }


def report(result: dict[str, Any]) -> None:
    print(f"ticks {result['ticks']}, leader kills {result['kills']}, skipped {result['skipped']}")
    for peer, figures in result["per_peer"].items():
        print(f"  peer {peer}: {figures}")
    calm, every = result["lateness_calm_ms"], result["lateness_all_ms"]
    print(f"lateness outside failovers (n={calm['n']}): ", end="")
    print(f"p50 {calm['p50']:.1f} ms, p99 {calm['p99']:.1f} ms")
    print(f"lateness, all ticks: p50 {every['p50']:.1f} ms, p99 {every['p99']:.1f} ms, ", end="")
    print(f"max {every['max']:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_in_data_dir(args, run, "bench-schedules-", report)


if __name__ == "__main__":
    raise SystemExit(main())
