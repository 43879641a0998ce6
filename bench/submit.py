"""Acknowledged-submit throughput and latency on a local cluster.

    python bench/submit.py [--nodes 5] [--clients 32] [--seconds 10] [--parts P,..] [--json OUT]

Starts its own cluster on free loopback ports (tests/harness.py), then runs the load in a
separate process so the client's CPU is not hidden in the peers' and is reported alone:

1. single: `--clients` concurrent clients, one task per request, to random peers and
   to the leader only; acknowledged tasks per second.
2. batch: 4 concurrent clients posting `/tasks/batch` of `--batch` tasks.
3. latency: one client, one task at a time: p50 / p99 of submit.
4. done: one client, one `echo` task at a time, submitted to the leader and awaited there
   with `GET /tasks/{id}?wait=10`: p50 / p99 of submit and of submit-to-done.

`--parts` picks some of `single,batch,latency,done` (all by default); they run in the
order latency, done, single, batch, so the latencies are taken on an empty task table.
Except in `done`, tasks are submitted with a long delay so the cluster only stores
them: this measures the submit path alone (bench/e2e.py measures execution).
`run` (a cluster and the load) and `load` (the client process) are used by bench/run.py.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


PARKED = {"delay": 86400}  # submitted tasks wait a day: nothing runs during the benchmark
PARTS = ("latency", "done", "single", "batch")  # the order they run in
DONE_WAIT = 10  # seconds a `done` sample waits for its task


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
        "samples_ms": samples,
    }


async def _latency_done(url: str, count: int) -> dict[str, Any]:
    """One echo task at a time: submit, then long-poll the same peer until it is done."""
    import aiohttp

    submit: list[float] = []
    done: list[float] = []
    failed = 0
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            start = time.perf_counter()
            async with session.post(url + "/tasks", json={"kind": "echo", "args": i}) as resp:
                task = await resp.json()
            submit.append((time.perf_counter() - start) * 1000)
            wait = f"{url}/tasks/{task['id']}?wait={DONE_WAIT}"
            async with session.get(wait) as resp:
                task = await resp.json()
            done.append((time.perf_counter() - start) * 1000)
            failed += task["state"] != "succeeded"
    return {
        "count": count,
        "not_succeeded": failed,
        "submit_p50_ms": statistics.median(submit),
        "submit_p99_ms": percentile(submit, 99),
        "done_p50_ms": statistics.median(done),
        "done_p99_ms": percentile(done, 99),
        "submit_samples_ms": submit,
        "done_samples_ms": done,
    }


def run_load(args: argparse.Namespace) -> None:
    """The client process: reads urls from argv, prints one JSON line of results."""
    urls = args.urls.split(",")
    leader = urls[0]
    parts = args.parts.split(",")
    out: dict[str, object] = {}
    cpu0 = time.process_time()
    if "latency" in parts:
        out["latency_leader"] = asyncio.run(_latency(leader, args.latency))
        out["latency_follower"] = asyncio.run(_latency(urls[-1], args.latency))
    if "done" in parts:
        out["done_leader"] = asyncio.run(_latency_done(leader, args.latency))
    if "single" in parts:
        out["single_random"] = asyncio.run(_single(urls, args.clients, args.seconds))
        out["single_leader"] = asyncio.run(_single([leader], args.clients, args.seconds))
    if "batch" in parts:
        out["batch"] = asyncio.run(_batch(urls, 4, args.batch, args.seconds))
    out["client_cpu_seconds"] = time.process_time() - cpu0
    print(json.dumps(out))


def peer_cpu(cluster: Any) -> float:
    """CPU seconds (user + system) the cluster's peer processes have used so far."""
    total = 0.0
    for n in cluster.ids:
        pid = cluster.pid(n)
        if pid:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def load(cluster: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Run the client process against a started cluster; its results plus the peers' CPU."""
    leader = cluster.wait_for_leader(timeout=20)
    urls = [cluster.url(leader)] + [cluster.url(n) for n in cluster.ids if n != leader]
    cpu0 = peer_cpu(cluster)
    cmd = [sys.executable, __file__, "--load", "--urls", ",".join(urls), "--parts", args.parts]
    cmd += ["--clients", str(args.clients), "--seconds", str(args.seconds)]
    cmd += ["--batch", str(args.batch), "--latency", str(args.latency)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
    results: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    results["peer_cpu_seconds"] = peer_cpu(cluster) - cpu0
    results["nodes"] = args.nodes
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    """A fresh cluster of `args.nodes` peers (log level WARNING) and the load against it."""
    from tests.harness import Cluster

    with tempfile.TemporaryDirectory() as tmp, Cluster(args.nodes, tmp, log_level="WARNING") as c:
        c.start_all()
        return load(c, args)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--latency", type=int, default=500)
    parser.add_argument("--parts", default=",".join(PARTS), help="some of " + ",".join(PARTS))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = parser().parse_args()
    if args.load:
        run_load(args)
        return
    results = run(args)
    print(json.dumps({k: _brief(v) for k, v in results.items()}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _brief(value: Any) -> Any:
    """`value` without its sample lists (they go to the JSON file, not the screen)."""
    if isinstance(value, dict):
        return {k: _brief(v) for k, v in value.items() if not k.endswith("samples_ms")}
    return value


if __name__ == "__main__":
    main()
