"""A cluster's months in minutes: a million tasks through retention and snapshots.

    python bench/long_run.py [--nodes 5] [--tasks 1000000] [--batch 500] [--posters 4]
                             [--backlog 20000] [--keep 5s] [--no-snapshots | --snapshot-bytes N]
                             [--load-only] [--json OUT] [--data-dir D]

Starts its own cluster on free loopback ports (tests/harness.py, log level WARNING) with
`keep_finished` and `keep_trimmed` at `--keep` and `keep_keys` at a minute, so finished
tasks are trimmed, then forgotten, and logs are compacted into snapshots (the defaults:
a snapshot every 2 MiB of log or 20,000 entries).

1. empty start: the time from starting every peer process to a ready leader that every
   peer follows (the figure a restart is compared with).
2. the run: a separate client process posts `--tasks` keyed echo tasks as
   `/tasks/batch` requests of `--batch` from `--posters` posters to random peers, never
   more than `--backlog` ahead of the tasks done (a cluster kept running for months gets
   work at the rate it does it; an unbounded backlog is a different test); every `--sample`
   seconds (2) each peer's resident memory (VmRSS) and its database files (state.sqlite3 with its
   WAL) are sampled, and the leader's counts of tasks succeeded or forgotten. Reported:
   tasks/s over the whole run and in each tenth of its time (a cluster that slows as it
   ages shows it), the peak RSS and database per peer, and the CPU every peer used
   (user and system, per task in all: steadier than tasks/s on a shared machine).
3. full restart: every peer SIGKILLed, then all started again: the time to a ready
   leader every peer follows, and to every peer answering with the whole history
   counted (loaded from its snapshot and the log's tail).
4. a wiped peer: a follower SIGKILLed, its data directory deleted, started again: the
   time until it follows the leader with every task counted (from the leader's
   snapshot: `/cluster` shows the `snapshot_installed` event).

`--load-only` stops after step 2 (for interleaved A/B runs). Prints the figures;
`--json OUT` also writes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for `tests.harness`

from cli_run import run_in_data_dir  # noqa: E402

START_TIMEOUT = 60.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5, help="peers in the cluster (5)")
    parser.add_argument("--tasks", type=int, default=1_000_000, help="echo tasks (1000000)")
    parser.add_argument("--batch", type=int, default=500, help="tasks per batch request (500)")
    parser.add_argument("--posters", type=int, default=4, help="concurrent batch posters (4)")
    parser.add_argument("--sample", type=float, default=2.0, help="seconds between samples (2)")
    parser.add_argument("--backlog", type=int, default=20000, help="tasks ahead at most (20000)")
    parser.add_argument("--keep", default="5s", help="keep_finished and keep_trimmed (5s)")
    parser.add_argument(
        "--no-snapshots", action="store_true", help="never snapshot (the baseline to compare)"
    )
    parser.add_argument(
        "--snapshot-bytes", type=int, help="characters of log between snapshots (the default)"
    )
    parser.add_argument(
        "--snapshot-task-chars", type=int, help="log characters per task a step holds (default)"
    )
    parser.add_argument(
        "--load-only", action="store_true", help="skip the restart and the wiped peer (A/B runs)"
    )
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    parser.add_argument("--data-dir", help="keep config and peer logs here (default: a tmp dir)")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    return parser


# ------------------------------------------------------------ the client process


async def _post_paced(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    urls = args.urls.split(",")
    batches = iter(range(0, args.tasks, args.batch))
    out = {"acked": 0, "posts": 0, "retries": 0, "waits": 0}
    done = [0]

    async def read_done(session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(random.choice(urls) + "/cluster") as resp:
                if resp.status == 200:
                    done[0] = max(done[0], done_count(await resp.json()))
        except (aiohttp.ClientError, TimeoutError):
            pass

    async def poster(session: aiohttp.ClientSession) -> None:
        for start in batches:
            while out["acked"] - done[0] > args.backlog:
                out["waits"] += 1
                await read_done(session)
                await asyncio.sleep(0.05)
            stop = min(args.tasks, start + args.batch)
            specs = [{"kind": "echo", "args": i, "key": f"long-{i}"} for i in range(start, stop)]
            body = json.dumps({"tasks": specs}).encode()
            for attempt in range(30):
                out["posts"] += 1
                try:
                    async with session.post(
                        random.choice(urls) + "/tasks/batch",
                        data=body,
                        headers={"Content-Type": "application/json"},
                    ) as resp:
                        if resp.status in (200, 201):
                            out["acked"] += stop - start
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                out["retries"] += 1
                await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
            else:
                raise RuntimeError("a batch was refused 30 times")

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(poster(session) for _ in range(args.posters)))
    return out


def run_load(args: argparse.Namespace) -> None:
    out = asyncio.run(_post_paced(args))
    out["client_cpu_seconds"] = time.process_time()
    print(json.dumps(out))


def rss_mib(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_seconds(pid: int | None) -> float:
    """User and system CPU a process has used (/proc/PID/stat), 0 once it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def db_mib(node_dir: Path) -> float:
    files = [node_dir / name for name in ("state.sqlite3", "state.sqlite3-wal")]
    return sum(f.stat().st_size for f in files if f.exists()) / (1 << 20)


def done_count(view: dict[str, Any] | None) -> int:
    if view is None:
        return -1
    counts = view["tasks"]
    return int(counts["succeeded"] + counts["forgotten"])


def ready_everywhere(cluster: Any) -> bool:
    views = cluster.views(cluster.running_ids())
    leaders = {v["leader"] for v in views.values() if v is not None}
    if None in views.values() or len(leaders) != 1 or None in leaders:
        return False
    leader = views[next(iter(leaders))]
    return leader is not None and bool(leader["ready"])


def timed_start(cluster: Any, what: str) -> float:
    start = time.monotonic()
    cluster.start_all()
    cluster.wait_for(lambda: ready_everywhere(cluster), START_TIMEOUT, what, interval=0.02)
    return time.monotonic() - start


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    from tests.harness import Cluster

    overrides: dict[str, Any] = {
        "keep_finished": args.keep,
        "keep_trimmed": args.keep,
        "keep_keys": "60s",
    }
    if args.no_snapshots:
        overrides.update(snapshot_every=0, snapshot_bytes=0)
    elif args.snapshot_bytes is not None:
        overrides.update(snapshot_bytes=args.snapshot_bytes)
    out: dict[str, Any] = {"nodes": args.nodes, "tasks": args.tasks, "keep": args.keep}
    if args.snapshot_task_chars is not None:
        overrides.update(snapshot_task_chars=args.snapshot_task_chars)
    out["snapshot_bytes"] = overrides.get("snapshot_bytes")
    out["snapshot_task_chars"] = overrides.get("snapshot_task_chars")
    out["snapshots"] = not args.no_snapshots
    with Cluster(args.nodes, data_dir, overrides, log_level="WARNING") as cluster:
        out["empty_start_s"] = timed_start(cluster, "an empty cluster to elect")
        print(f"empty start: {out['empty_start_s']:.2f} s to a ready leader", flush=True)
        out.update(_run_load(cluster, args))
        if args.load_only:
            return out
        for n in cluster.ids:
            cluster.kill(n)
        out["restart_ready_s"] = timed_start(cluster, "the restarted cluster to elect")
        start = time.monotonic() - out["restart_ready_s"]
        total = args.tasks

        def loaded() -> bool:
            views = cluster.views(cluster.running_ids())
            return all(done_count(v) >= total for v in views.values())

        cluster.wait_for(loaded, START_TIMEOUT, "every peer to count every task", 0.02)
        out["restart_loaded_s"] = time.monotonic() - start
        views = cluster.views(cluster.running_ids())
        out["after_restart"] = {
            n: {"log_base": v["log_base"], "last_index": v["last_index"]}
            for n, v in views.items()
            if v is not None
        }
        out.update(_wipe_one(cluster, total))
    return out


def _wipe_one(cluster: Any, total: int) -> dict[str, Any]:
    # the highest id: a restarted cluster may first elect a lower one, which the highest
    # then preempts (bully's rule); a wiped peer that follows the new leader has caught up
    leader = cluster.wait_for_leader(expected=max(cluster.ids), timeout=START_TIMEOUT)
    victim = min(n for n in cluster.ids if n != leader)
    cluster.kill(victim)
    shutil.rmtree(cluster.config.node_dir(victim))
    start = time.monotonic()
    cluster.start(victim)

    def caught_up() -> bool:
        view = cluster.view(victim)
        return (
            view is not None
            and view["leader"] == leader
            and not view["catching_up"]
            and done_count(view) >= total
        )

    cluster.wait_for(caught_up, START_TIMEOUT, "the wiped peer to catch up", interval=0.02)
    seconds = time.monotonic() - start
    view = cluster.view(victim) or {}
    installed = [e for e in view.get("events", []) if e["event"] == "snapshot_installed"]
    return {"wiped_peer": victim, "wiped_rejoin_s": seconds, "wiped_installed": installed}


def _run_load(cluster: Any, args: argparse.Namespace) -> dict[str, Any]:
    urls = [cluster.url(n) for n in cluster.ids]
    cmd = [sys.executable, __file__, "--load", "--urls", ",".join(urls), "--tasks", str(args.tasks)]
    cmd += ["--batch", str(args.batch), "--posters", str(args.posters)]
    cmd += ["--backlog", str(args.backlog)]
    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    deadline = started + max(600.0, args.tasks / 300)
    samples: list[dict[str, Any]] = []
    peak_rss: dict[int, float] = {}
    peak_db: dict[int, float] = {}
    leader = cluster.wait_for_leader(timeout=START_TIMEOUT)
    cpu_before = {n: cpu_seconds(cluster.pid(n)) for n in cluster.ids}
    while time.monotonic() < deadline:
        view = cluster.view(leader)
        if view is not None and view["role"] != "leader" and view["leader"] is not None:
            leader = view["leader"]
        done = done_count(view)
        sample = {"t": time.monotonic() - started, "done": done, "rss": {}, "db": {}}
        sample["log_base"] = None if view is None else view["log_base"]
        for n in cluster.ids:
            sample["rss"][n] = rss_mib(cluster.pid(n))
            sample["db"][n] = db_mib(cluster.config.node_dir(n))
            peak_rss[n] = max(peak_rss.get(n, 0.0), sample["rss"][n])
            peak_db[n] = max(peak_db.get(n, 0.0), sample["db"][n])
        samples.append(sample)
        if len(samples) % max(1, round(30 / args.sample)) == 1:
            print(
                f"t={sample['t']:.0f}s done {done}, rss max {max(sample['rss'].values()):.0f} "
                f"MiB, db max {max(sample['db'].values()):.1f} MiB",
                flush=True,
            )
        if done >= args.tasks:
            break
        if client.poll() not in (None, 0):
            raise AssertionError(f"the client process failed (exit {client.returncode})")
        time.sleep(args.sample)
    else:
        client.kill()
        raise AssertionError(f"not all {args.tasks} tasks done in time")
    seconds = samples[-1]["t"]
    cpu = {n: cpu_seconds(cluster.pid(n)) - cpu_before[n] for n in cluster.ids}
    load = json.loads(client.communicate(timeout=60)[0].strip().splitlines()[-1])
    rates = []  # tasks/s in each tenth of the run's time, from the samples nearest
    marks = [min(samples, key=lambda s: abs(s["t"] - seconds * k / 10)) for k in range(11)]
    for a, b in zip(marks, marks[1:], strict=False):
        if b["t"] > a["t"]:
            rates.append((b["done"] - max(0, a["done"])) / (b["t"] - a["t"]))
    views = cluster.views(cluster.running_ids())
    return {
        "seconds": seconds,
        "per_second": args.tasks / seconds,
        "per_second_by_tenth": rates,
        "peak_rss_mib": peak_rss,
        "peak_db_mib": peak_db,
        "peer_cpu_s": cpu,
        "peer_cpu_ms_per_task": 1000 * sum(cpu.values()) / args.tasks,
        "client": load,
        "end": {
            n: {"log_base": v["log_base"], "last_index": v["last_index"], "tasks": v["tasks"]}
            for n, v in views.items()
            if v is not None
        },
        "samples": samples,
    }


def print_report(out: dict[str, Any]) -> None:
    snapshots = "snapshots" if out["snapshots"] else "no snapshots"
    print(f"\n{out['nodes']} peers, {out['tasks']} echo tasks, keep {out['keep']}, {snapshots}")
    print(f"  throughput: {out['per_second']:.0f} tasks/s over {out['seconds']:.0f} s")
    print("  by tenth:   " + " ".join(f"{r:.0f}" for r in out["per_second_by_tenth"]))
    print("  peak RSS MiB per peer: " + _per_peer(out["peak_rss_mib"]))
    print("  peak database MiB per peer: " + _per_peer(out["peak_db_mib"]))
    print(
        f"  peer CPU: {out['peer_cpu_ms_per_task']:.3f} ms per task in all; seconds per peer: "
        + _per_peer(out["peer_cpu_s"])
    )
    if "restart_ready_s" not in out:
        return
    print(
        f"  start: empty {out['empty_start_s']:.2f} s; full restart {out['restart_ready_s']:.2f}"
        f" s to a ready leader, {out['restart_loaded_s']:.2f} s to every peer loaded"
    )
    bases = {n: v["log_base"] for n, v in out["after_restart"].items()}
    print(f"  log base after the restart: {bases}")
    how = "from a snapshot" if out["wiped_installed"] else "from entries"
    print(f"  wiped peer {out['wiped_peer']} caught up in {out['wiped_rejoin_s']:.2f} s ({how})")


def _per_peer(values: dict[int, float]) -> str:
    return ", ".join(f"{n}: {v:.1f}" for n, v in sorted(values.items()))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.load:
        run_load(args)
        return 0
    return run_in_data_dir(args, run, "bench-long-", print_report)


if __name__ == "__main__":
    raise SystemExit(main())
