"""Acknowledged-submit throughput and latency on a local cluster.

    python bench/submit.py [--nodes 5] [--clients 32] [--seconds 10] [--json OUT]

Starts its own cluster on free loopback ports (tests/harness.py), then runs the load in a
separate process so the client's CPU is not hidden in the peers' and is reported alone:

1. single: `--clients` concurrent clients, one task per request, to random peers and
   to the leader only; acknowledged tasks per second.
2. batch: 4 concurrent clients posting `/tasks/batch` of `--batch` tasks.
3. latency: one client, one task at a time: p50 / p99 of submit.

Tasks are submitted with a long delay so the cluster only stores them: this measures the
submit path alone (bench/e2e.py measures execution).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


PARKED = {"delay": 86400}  # submitted tasks wait a day: nothing runs during the benchmark


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


async def _single(urls: list[str], clients: int, seconds: float) -> dict[str, float]:
    import aiohttp

    done = 0
    errors = 0
    stop_at = time.monotonic() + seconds

    async def one_client(session: aiohttp.ClientSession, n: int) -> None:
        nonlocal done, errors
        i = 0
        while time.monotonic() < stop_at and i < 1_000_000:
            i += 1
            body = {"kind": "echo", "args": i, "key": f"c{n}-{i}-{random.random()}", **PARKED}
            async with session.post(random.choice(urls) + "/tasks", json=body) as resp:
                await resp.read()
                if resp.status in (200, 201):
                    done += 1
                else:
                    errors += 1

    start = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one_client(session, n) for n in range(clients)))
    elapsed = time.monotonic() - start
    return {"tasks": done, "errors": errors, "seconds": elapsed, "per_second": done / elapsed}


async def _batch(urls: list[str], clients: int, size: int, seconds: float) -> dict[str, float]:
    import aiohttp

    done = 0
    stop_at = time.monotonic() + seconds

    async def one_client(session: aiohttp.ClientSession) -> None:
        nonlocal done
        for _ in range(10_000):
            if time.monotonic() >= stop_at:
                return
            body = {"tasks": [{"kind": "echo", "args": i, **PARKED} for i in range(size)]}
            async with session.post(random.choice(urls) + "/tasks/batch", json=body) as resp:
                await resp.read()
                if resp.status in (200, 201):
                    done += size

    start = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one_client(session) for _ in range(clients)))
    elapsed = time.monotonic() - start
    return {"tasks": done, "seconds": elapsed, "per_second": done / elapsed}


async def _latency(url: str, count: int) -> dict[str, float]:
    import aiohttp

    samples = []
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            start = time.perf_counter()
            body = {"kind": "echo", "args": i, **PARKED}
            async with session.post(url + "/tasks", json=body) as resp:
                await resp.read()
            samples.append((time.perf_counter() - start) * 1000)
    return {
        "count": count,
        "p50_ms": statistics.median(samples),
        "p99_ms": percentile(samples, 99),
    }


def run_load(args: argparse.Namespace) -> None:
    """The client process: reads urls from argv, prints one JSON line of results."""
    urls = args.urls.split(",")
    leader = urls[0]
    out: dict[str, object] = {}
    cpu0 = time.process_time()
    out["single_random"] = asyncio.run(_single(urls, args.clients, args.seconds))
    out["single_leader"] = asyncio.run(_single([leader], args.clients, args.seconds))
    out["batch"] = asyncio.run(_batch(urls, 4, args.batch, args.seconds))
    out["latency_leader"] = asyncio.run(_latency(leader, args.latency))
    out["latency_follower"] = asyncio.run(_latency(urls[-1], args.latency))
    out["client_cpu_seconds"] = time.process_time() - cpu0
    print(json.dumps(out))


def peer_cpu(cluster) -> float:  # type: ignore[no-untyped-def]
    total = 0.0
    for n in cluster.ids:
        pid = cluster.pid(n)
        if pid:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=500)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        run_load(args)
        return
    from tests.harness import Cluster

    with tempfile.TemporaryDirectory() as tmp, Cluster(args.nodes, tmp, log_level="WARNING") as c:
        c.start_all()
        leader = c.wait_for_leader(timeout=20)
        urls = [c.url(leader)] + [c.url(n) for n in c.ids if n != leader]
        cpu0 = peer_cpu(c)
        cmd = [sys.executable, __file__, "--load", "--urls", ",".join(urls)]
        cmd += ["--clients", str(args.clients), "--seconds", str(args.seconds)]
        cmd += ["--batch", str(args.batch), "--latency", str(args.latency)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
        results = json.loads(proc.stdout.strip().splitlines()[-1])
        results["peer_cpu_seconds"] = peer_cpu(c) - cpu0
        results["nodes"] = args.nodes
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
