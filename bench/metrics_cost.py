"""What `/metrics` costs: scrape time with many tasks, and submit throughput with and
without a scraper.

    python bench/metrics_cost.py [--nodes 3] [--tasks 100000] [--seconds 10] [--json OUT]

Starts `--nodes` peers (tests/harness.py), stores `--tasks` parked tasks (a long delay,
so they only sit in the table), then times 50 scrapes of the leader's `/metrics`
(median, p90). Then it runs single submits from 16 client threads for `--seconds`,
alternately without and with a scraper that fetches every peer's `/metrics` once a
second (two rounds each), and reports acknowledged submits per second for both.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for `tests.harness`

from cli_run import run_in_data_dir  # noqa: E402

from tests.chaos import request_once  # noqa: E402
from tests.harness import Cluster  # noqa: E402

CLIENTS = 16
START_TIMEOUT = 30.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", metavar="OUT")
    parser.add_argument("--data-dir")
    return parser


def _scrape_times(cluster: Cluster, peer: int, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        status, _ = request_once(cluster, peer, "GET", "/metrics")
        times.append(time.perf_counter() - started)
        assert status == 200
    return times


def _submits(cluster: Cluster, seconds: float, scrape: bool) -> float:
    """Acknowledged single submits per second from CLIENTS threads to random peers."""
    stop = threading.Event()
    acked = [0] * CLIENTS

    def client(n: int) -> None:
        node = cluster.config.node(cluster.ids[n % len(cluster.ids)])
        conn = http.client.HTTPConnection(node.host, node.port, timeout=10)
        body = json.dumps({"kind": "echo", "delay": 86400}).encode()
        while not stop.is_set():
            conn.request("POST", "/tasks", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            acked[n] += response.status == 201

    def scraper() -> None:
        while not stop.wait(1.0):
            for peer in cluster.ids:
                request_once(cluster, peer, "GET", "/metrics")

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    if scrape:
        threads.append(threading.Thread(target=scraper, daemon=True))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(10)
    return sum(acked) / seconds


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    cluster = Cluster(args.nodes, data_dir)
    try:
        cluster.start_all()
        leader = cluster.wait_for_leader(timeout=START_TIMEOUT)
        parked = {"kind": "echo", "delay": 86400}
        for start in range(0, args.tasks, 10_000):
            specs = [parked] * min(10_000, args.tasks - start)
            body = json.dumps({"tasks": specs}).encode()
            status, data = request_once(cluster, leader, "POST", "/tasks/batch", body, 60)
            assert status == 201, data[:200]
        times = sorted(_scrape_times(cluster, leader, 50))
        rounds = {"without": [], "with": []}
        for _ in range(2):
            rounds["without"].append(_submits(cluster, args.seconds, scrape=False))
            rounds["with"].append(_submits(cluster, args.seconds, scrape=True))
        return {
            "tasks": args.tasks,
            "scrape_ms": {"median": statistics.median(times) * 1e3, "p90": times[44] * 1e3},
            "submits_per_second": rounds,
        }
    finally:
        cluster.stop_all()


def report(result: dict[str, Any]) -> None:
    scrape = result["scrape_ms"]
    print(f"/metrics at {result['tasks']} tasks: median {scrape['median']:.1f} ms, ", end="")
    print(f"p90 {scrape['p90']:.1f} ms")
    for name, rates in result["submits_per_second"].items():
        print(f"submits/s {name} a scraper: " + ", ".join(f"{r:.0f}" for r in rates))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_in_data_dir(args, run, "bench-metrics-", report)


if __name__ == "__main__":
    raise SystemExit(main())
