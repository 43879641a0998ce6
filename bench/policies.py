"""Queue policies on a real cluster: weighted shares, a cap, a rate, priority aging.

    python bench/policies.py [--nodes 5] [--seconds 30] [--json OUT]

Three clusters on free loopback ports (tests/harness.py), one after the other:

1. fair: queues `a` (weight 3) and `b` (weight 1) kept saturated with 0.2 s sleep
   tasks for `--seconds`; the attempts started in the window, per queue, and their
   ratio (aim: 3 +- 10 %).
2. caps: queue `rated` (`rate = 20`) flooded with echo tasks, queue `capped`
   (`max_running = 3`) with 0.2 s sleeps; starts per second of `rated` over
   `--seconds` (aim: 20 +- 10 %), and the most `capped` attempts ever seen running,
   sampled every 50 ms on the leader (aim: never above 3).
3. priority: `priority_aging = 0.5` under a steady flood of priority-9 sleeps; one
   priority-0 task is submitted and the seconds until it starts are reported against
   its bound (9 levels x 0.5 s, plus one round of the running attempts).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for `tests.harness`

from cli_run import run_in_data_dir  # noqa: E402

from peer.protocol.settings import QueuePolicy  # noqa: E402
from tests.chaos import list_all, request_once  # noqa: E402
from tests.harness import Cluster  # noqa: E402

START_TIMEOUT = 30.0
SAMPLE = 0.05
BACKLOG = 200  # priority-9 tasks kept waiting in the aging run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--data-dir")
    return parser


def _batch(cluster: Cluster, peer: int, specs: list[dict[str, Any]]) -> None:
    for start in range(0, len(specs), 2000):
        body = json.dumps({"tasks": specs[start : start + 2000]}).encode()
        status, data = request_once(cluster, peer, "POST", "/tasks/batch", body, timeout=60)
        assert status == 201, data[:300]


def _started_in(tasks: list[dict[str, Any]], queue: str, start: float, end: float) -> int:
    return sum(
        1
        for t in tasks
        if t["queue"] == queue and t["started_at"] is not None and start <= t["started_at"] < end
    )


def _cluster(args: argparse.Namespace, data_dir: Path, name: str, **overrides: Any) -> Cluster:
    cluster = Cluster(args.nodes, data_dir / name, overrides)
    cluster.start_all()
    return cluster


def fair(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    queues = (("a", QueuePolicy(weight=3.0)), ("b", QueuePolicy(weight=1.0)))
    cluster = _cluster(args, data_dir, "fair", policy="fair", queues=queues)
    try:
        leader = cluster.wait_for_leader(timeout=START_TIMEOUT)
        per_queue = int(args.seconds * 120)  # more than a queue can start in the window
        sleep = {"kind": "sleep", "args": {"seconds": 0.2}}
        start = time.time()
        _batch(cluster, leader, [{**sleep, "queue": q} for _ in range(per_queue) for q in "ab"])
        time.sleep(args.seconds)
        end = time.time()
        tasks = list_all(cluster, leader)
        a, b = _started_in(tasks, "a", start, end), _started_in(tasks, "b", start, end)
        left = {
            q: sum(1 for t in tasks if t["queue"] == q and t["state"] == "queued") for q in "ab"
        }
        assert left["a"] and left["b"], f"a queue ran dry: not saturated {left}"
        return {"started_a": a, "started_b": b, "ratio": a / max(1, b), "queued_at_end": left}
    finally:
        cluster.stop_all()


def caps(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    queues = (("rated", QueuePolicy(rate=20.0)), ("capped", QueuePolicy(max_running=3)))
    cluster = _cluster(args, data_dir, "caps", policy="fair", queues=queues)
    try:
        leader = cluster.wait_for_leader(timeout=START_TIMEOUT)
        rated = [{"kind": "echo", "queue": "rated"} for _ in range(int(args.seconds * 40))]
        capped = [{"kind": "sleep", "args": {"seconds": 0.2}, "queue": "capped"}] * 400
        start = time.time()
        _batch(cluster, leader, rated + capped)
        most = 0
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            path = "/tasks?state=running&queue=capped&limit=1000"
            status, data = request_once(cluster, leader, "GET", path)
            assert status == 200, data
            most = max(most, len(json.loads(data)["tasks"]))
            time.sleep(SAMPLE)
        end = time.time()
        tasks = list_all(cluster, leader)
        started = _started_in(tasks, "rated", start, end)
        return {
            "rated_started": started,
            "rated_per_second": started / (end - start),
            "capped_most_running": most,
            "capped_started": _started_in(tasks, "capped", start, end),
        }
    finally:
        cluster.stop_all()


def aging(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    cluster = _cluster(args, data_dir, "aging", policy="priority", priority_aging=0.5)
    try:
        leader = cluster.wait_for_leader(timeout=START_TIMEOUT)
        high = {"kind": "sleep", "args": {"seconds": 0.2}, "priority": 9}
        _batch(cluster, leader, [high] * BACKLOG)
        body = json.dumps({"kind": "echo", "priority": 0}).encode()
        status, data = request_once(cluster, leader, "POST", "/tasks", body)
        assert status == 201, data
        low = json.loads(data)["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = cluster.view(leader) or {}
            queued = view.get("tasks", {}).get("queued", 0)
            if queued < BACKLOG:  # keep a steady backlog of high priorities waiting
                _batch(cluster, leader, [high] * (BACKLOG - queued))
            status, data = request_once(cluster, leader, "GET", f"/tasks/{low}")
            task = json.loads(data)
            if task["started_at"] is not None:
                waited = task["started_at"] - task["submitted_at"]
                return {"low_waited_s": waited, "aging_bound_s": 9 * 0.5, "backlog": BACKLOG}
            time.sleep(0.1)
        raise AssertionError("the priority-0 task never started")
    finally:
        cluster.stop_all()


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    return {
        "fair": fair(args, data_dir),
        "caps": caps(args, data_dir),
        "aging": aging(args, data_dir),
    }


def report(result: dict[str, Any]) -> None:
    fair_, caps_, aging_ = result["fair"], result["caps"], result["aging"]
    print(f"fair 3:1: a {fair_['started_a']}, b {fair_['started_b']}, ratio {fair_['ratio']:.2f}")
    print(f"rate 20/s: {caps_['rated_per_second']:.2f}/s ({caps_['rated_started']} started)")
    print(f"max_running 3: at most {caps_['capped_most_running']} seen running")
    waited, bound = aging_["low_waited_s"], aging_["aging_bound_s"]
    print(f"aging: priority 0 started after {waited:.2f} s (9 levels x 0.5 s = {bound} s, ", end="")
    print(f"plus the wait of the {aging_['backlog']} waiting priority-9 tasks)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_in_data_dir(args, run, "bench-policies-", report)


if __name__ == "__main__":
    raise SystemExit(main())
