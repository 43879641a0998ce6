"""Where a busy peer's CPU goes: one peer of a cluster under load, under cProfile.

    python bench/load_profile.py [--peer leader|follower] [--load single|clients|batch|e2e]
                                 [--count 1000] [--top 25]

Starts 5 peers (tests/harness.py), restarts the chosen one (the leader, the highest id,
or follower 1) under `cProfile` with a CPU-time timer (bench/idle_profile.py's wrapper:
SIGUSR1 starts it, SIGUSR2 writes the profile), waits until it is back (and leads
again), profiles it while this process runs the load against the leader, and prints
the functions with the most own time and the most cumulative time. Loads, each bounded:

- single: `--count` submits one at a time (parked for a day, so nothing runs);
- clients: 32 concurrent clients submitting for 6 seconds;
- batch: 40 batches of 1,000 parked tasks from 4 clients;
- e2e: 20,000 echo tasks in batches of 500 from 4 clients, until all succeeded.

The profiler slows the peer about twofold: read shares, not absolute cost.
"""

from __future__ import annotations

import argparse
import asyncio
import pstats
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # for `tests.harness`
sys.path.insert(0, str(BENCH))

import idle_profile  # noqa: E402

from tests.harness import Cluster  # noqa: E402

PARKED = {"kind": "echo", "args": 0, "delay": 86400}
CLIENTS_SECONDS = 6.0
E2E_TASKS = 20000
E2E_TIMEOUT = 120.0


Post = Callable[[str, object], Awaitable[None]]


async def load(url: str, kind: str, count: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def post(path: str, body: object) -> None:
            async with session.post(url + path, json=body) as resp:
                await resp.read()

        async def succeeded() -> int:
            async with session.get(url + "/cluster") as resp:
                return int((await resp.json())["tasks"]["succeeded"])

        if kind == "single":
            for _ in range(count):
                await post("/tasks", PARKED)
        elif kind == "clients":
            await _clients(post)
        elif kind == "batch":
            await _batches(post)
        else:
            await _e2e(post, succeeded)


async def _clients(post: Post) -> None:
    stop_at = time.monotonic() + CLIENTS_SECONDS

    async def client() -> None:
        while time.monotonic() < stop_at:
            await post("/tasks", PARKED)

    await asyncio.gather(*(client() for _ in range(32)))


async def _batches(post: Post) -> None:
    body = {"tasks": [PARKED] * 1000}

    async def poster() -> None:
        for _ in range(10):
            await post("/tasks/batch", body)

    await asyncio.gather(*(poster() for _ in range(4)))


async def _e2e(post: Post, succeeded: Callable[[], Awaitable[int]]) -> None:
    batches = E2E_TASKS // 500

    async def poster(k: int) -> None:
        for b in range(k, batches, 4):
            tasks = [{"kind": "echo", "args": b * 500 + i} for i in range(500)]
            await post("/tasks/batch", {"tasks": tasks})

    started = time.monotonic()
    await asyncio.gather(*(poster(k) for k in range(4)))
    while time.monotonic() - started < E2E_TIMEOUT:
        if await succeeded() >= E2E_TASKS:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"not all {E2E_TASKS} tasks succeeded in {E2E_TIMEOUT:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", choices=("leader", "follower"), default="leader")
    parser.add_argument("--load", choices=("single", "clients", "batch", "e2e"), default="single")
    parser.add_argument("--count", type=int, default=1000, help="submits of the single load")
    parser.add_argument("--top", type=int, default=25, help="functions listed")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-load-profile-") as tmp:
        data = Path(tmp)
        with Cluster(5, data, log_level="WARNING") as cluster:
            cluster.start_all()
            leader = max(cluster.ids)
            cluster.wait_for_leader(leader, timeout=idle_profile.START_TIMEOUT)
            target = leader if args.peer == "leader" else min(cluster.ids)
            out = data / "peer.prof"
            cluster.stop(target)
            proc = idle_profile.start_profiled(cluster, target, out)

            others = [n for n in cluster.ids if n != target]

            def settled() -> bool:  # (the profiled process is not the harness's own)
                views = cluster.views(others).values()
                return all(v and v["leader"] == leader and v.get("ready") for v in views)

            cluster.wait_for(settled, idle_profile.START_TIMEOUT, "the profiled peer back", 0.1)
            time.sleep(1.5)  # past the restart's catch-up traffic
            proc.send_signal(signal.SIGUSR1)
            try:
                asyncio.run(load(cluster.url(leader), args.load, args.count))
            finally:
                proc.send_signal(signal.SIGUSR2)
                cluster.wait_for(out.exists, idle_profile.DUMP_TIMEOUT, "the profile", 0.1)
                proc.send_signal(signal.SIGTERM)
                proc.wait(idle_profile.STOP_TIMEOUT)
            print(f"peer {target} ({args.peer}) under the {args.load} load:")
            stats = pstats.Stats(str(out))
            stats.sort_stats("tottime").print_stats(args.top)
            stats.sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
