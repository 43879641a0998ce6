"""The same loads against Huey on Redis, so a report can show the cluster's figures as
ratios to a broker queue measured on the same machine in the same run.

    python bench/compare.py [--clients 32] [--seconds 10] [--latency 500] [--tasks 20000]
                            [--workers 4]

Needs `redis-server` on the PATH and the `huey` and `redis` packages (the `compare`
extra: `pip install -e '.[compare]'`); `available()` says why not when they are missing.
Starts its own `redis-server` on a free loopback port with persistence off (no RDB, no
AOF: nothing is fsynced, nothing is replicated: the cluster fsyncs every acknowledged
write on a majority of five disks) and a Huey consumer with `--workers` worker threads,
then measures, from one client process (results are pushed to a waiting client as they
are stored, Huey's `notify_result`, and the consumer blocks on its queue):

- latency: one client, one task at a time: enqueue, and enqueue until its result is
  read back (results are pushed to the waiting client, Huey's `notify_result`);
- enqueue: `--clients` client threads enqueueing for `--seconds`: tasks per second;
- e2e: `--tasks` no-op tasks enqueued by 4 threads, from the first enqueue until the
  consumer has stored every result: tasks per second.

Every load is bounded in count and time.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TASKS_MODULE = """
from huey import RedisHuey

huey = RedisHuey("bench", host="127.0.0.1", port={port}, results=True, notify_result=True)


@huey.task()
def echo(value):
    return value
"""
START_TIMEOUT = 15.0
E2E_THREADS = 4
E2E_TIMEOUT = 300.0


def available() -> str | None:
    """None when Huey on Redis can be measured here, else why not."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server)"
    for module in ("huey", "redis"):
        if importlib.util.find_spec(module) is None:
            return f"the {module} package is not installed (pip install -e '.[compare]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class HueyOnRedis:
    """A private redis-server and Huey consumer, stopped on exit."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-huey-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Any:
        redis_cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        redis_cmd += ["--save", "", "--appendonly", "no", "--dir", str(self.dir)]
        self.procs.append(subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL))
        (self.dir / "bench_tasks.py").write_text(TASKS_MODULE.format(port=self.port))
        sys.path.insert(0, str(self.dir))
        import bench_tasks  # type: ignore[import-not-found]

        self.tasks = bench_tasks
        self._wait_for_redis()
        consumer = [sys.executable, "-m", "huey.bin.huey_consumer", "bench_tasks.huey"]
        consumer += ["-w", str(self.workers), "-k", "thread", "-q"]
        env = dict(os.environ, PYTHONPATH=str(self.dir))
        log = open(self.dir / "consumer.log", "wb")  # noqa: SIM115 - the child owns it
        self.procs.append(subprocess.Popen(consumer, env=env, stdout=log, stderr=log))
        result = self.tasks.echo(0)
        if result.get(blocking=True, timeout=START_TIMEOUT) != 0:
            raise RuntimeError("the Huey consumer did not answer")
        return self.tasks

    def _wait_for_redis(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if self.tasks.huey.storage.conn.ping():
                    return
            except Exception:  # noqa: BLE001 - not up yet, whatever the error
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        sys.path.remove(str(self.dir))
        sys.modules.pop("bench_tasks", None)
        shutil.rmtree(self.dir, ignore_errors=True)


def latency(tasks: Any, count: int) -> dict[str, Any]:
    enqueue, done = [], []
    for i in range(count):
        t0 = time.perf_counter()
        result = tasks.echo(i)
        t1 = time.perf_counter()
        if result.get(blocking=True, timeout=10) != i:
            raise RuntimeError(f"task {i} returned a wrong result")
        t2 = time.perf_counter()
        enqueue.append((t1 - t0) * 1000)
        done.append((t2 - t0) * 1000)
    return {
        "enqueue_p50_ms": statistics.median(enqueue),
        "enqueue_p99_ms": _percentile(enqueue, 99),
        "done_p50_ms": statistics.median(done),
        "done_p99_ms": _percentile(done, 99),
        "count": count,
    }


def enqueue_rate(tasks: Any, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` threads enqueueing until `seconds` pass; the consumer is left to drain."""
    counts = [0] * clients
    stop_at = time.monotonic() + seconds

    def client(n: int) -> None:
        while time.monotonic() < stop_at:
            tasks.echo(n)
            counts[n] += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    elapsed = time.monotonic() - t0
    tasks.huey.flush()  # leave nothing queued for the next part
    return {"tasks": sum(counts), "seconds": elapsed, "per_second": sum(counts) / elapsed}


def end_to_end(tasks: Any, count: int) -> dict[str, Any]:
    """`count` tasks from 4 threads; first enqueue until every result is stored."""
    huey = tasks.huey
    huey.flush()
    per_thread = count // E2E_THREADS

    def poster(k: int) -> None:
        for i in range(per_thread):
            tasks.echo(k * per_thread + i)

    threads = [threading.Thread(target=poster, args=(k,)) for k in range(E2E_THREADS)]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(E2E_TIMEOUT)
    enqueued = time.monotonic() - t0
    target = per_thread * E2E_THREADS
    while huey.result_count() < target:
        if time.monotonic() - t0 > E2E_TIMEOUT:
            raise RuntimeError(f"only {huey.result_count()} of {target} results in time")
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    return {
        "tasks": target,
        "seconds": elapsed,
        "per_second": target / elapsed,
        "enqueued_seconds": enqueued,
    }


def run(clients: int, seconds: float, latency_count: int, count: int, workers: int) -> Any:
    """Every Huey figure, or {"skipped": reason} when Huey on Redis is not installed."""
    reason = available()
    if reason is not None:
        return {"skipped": reason}
    with HueyOnRedis(workers) as tasks:
        return {
            "version": importlib.metadata.version("huey"),
            "workers": workers,
            "latency": latency(tasks, latency_count),
            "enqueue": enqueue_rate(tasks, clients, seconds),
            "e2e": end_to_end(tasks, count),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--latency", type=int, default=500)
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=4, help="consumer worker threads (4)")
    args = parser.parse_args(argv)
    result = run(args.clients, args.seconds, args.latency, args.tasks, args.workers)
    print(json.dumps(result, indent=2))
    return 1 if "skipped" in result else 0


if __name__ == "__main__":
    raise SystemExit(main())
