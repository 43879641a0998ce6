"""One command for every benchmark of issue 5: speed, size and recovery, in one report.

    python bench/run.py [--quick] [--compare] [--only failover,submit,...,profile] [sizes...]

Each part starts its own local cluster on free loopback ports (tests/harness.py, log
level WARNING) and reuses the measuring functions of the single benches:

- failover: SIGKILL the leader `--kills` times (bench/failover.py): until the survivors
  agree on a ready new leader, and until a write is accepted;
- submit: `--clients` concurrent single-task clients, and `/tasks/batch` (bench/submit.py);
- latency: one client, one task at a time: submit, and submit-to-done (bench/submit.py);
- e2e: `--tasks` echo tasks, first submit to last succeeded (bench/e2e.py);
- scale: for each size in `--scale`: idle CPU and RSS per peer over `--idle` seconds,
  end-to-end throughput of `--scale-tasks`, failover over `--scale-kills` kills;
- loss: SIGKILL a busy worker until its tasks run elsewhere (bench/e2e.py);
- profile: where an idle leader's CPU goes, under cProfile for `--idle` seconds
  (bench/idle_profile.py);
- compare (with `--compare`): the latency, `--clients` and `--tasks` loads against Huey
  on Redis (bench/compare.py), each figure of this run as a ratio to Huey's.

Load comes from client processes separate from the peers (their CPU is reported apart).
`--quick` shrinks every size so the whole run takes about two minutes. Writes
`bench/results/<date>.json` (`<date>-quick.json` for a quick run: machine facts,
versions, config, every sample) and, through bench/report.py, `bench/REPORT.md` and its
charts. A part that fails is recorded as an error and the others still run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # for `tests.harness`
sys.path.insert(0, str(BENCH))  # for the single benches

import compare  # noqa: E402
import e2e  # noqa: E402
import failover  # noqa: E402
import idle_profile  # noqa: E402
import report  # noqa: E402
import submit  # noqa: E402

from tests.harness import Cluster, base_config  # noqa: E402

PARTS = ("failover", "submit", "latency", "e2e", "scale", "loss", "profile", "compare")
DEFAULT_PARTS = PARTS[:-1]  # `compare` runs with --compare (or --only compare)
START_TIMEOUT = 60.0  # a cold start of 15 peers on a busy 2-core box is slow
SIZES: dict[str, tuple[Any, Any]] = {  # name: (full run, quick run)
    "nodes": (5, 5),
    "kills": (10, 3),
    "settle": (1.0, 0.5),
    "clients": (32, 32),
    "seconds": (10.0, 2.0),
    "batch": (1000, 1000),
    "latency": (500, 50),
    "tasks": (20000, 3000),
    "scale": ("3,5,9,15", "3,5,9"),
    "idle": (30.0, 10.0),
    "scale_tasks": (10000, 1000),
    "scale_kills": (5, 2),
    "loss_runs": (5, 1),
    "loss_sleep": (2.0, 1.0),
}
HELP = {
    "nodes": "peers for every part but scale",
    "kills": "leader kills in the failover part",
    "settle": "seconds a new leader settles before the next kill",
    "clients": "concurrent single-task submitters",
    "seconds": "seconds of each submit load",
    "batch": "tasks per /tasks/batch request in the submit part",
    "latency": "samples of each latency",
    "tasks": "echo tasks in the end-to-end part",
    "scale": "cluster sizes of the scale part, comma-separated",
    "idle": "seconds of each idle CPU window and of the idle profile",
    "scale_tasks": "echo tasks per cluster size",
    "scale_kills": "leader kills per cluster size",
    "loss_runs": "worker kills per variant (every slot busy / spare slots)",
    "loss_sleep": "seconds each task sleeps in the loss part",
}
E2E_BATCH = 500  # tasks per request in the end-to-end parts
E2E_POSTERS = 4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="every size small (~2 minutes)")
    parser.add_argument(
        "--only", default=",".join(DEFAULT_PARTS), help="parts to run: " + ",".join(PARTS)
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also run the same loads against Huey on Redis (bench/compare.py) and report "
        "each figure as a ratio to it (needs redis-server and `pip install -e '.[compare]'`)",
    )
    for name, (full, quick) in SIZES.items():
        flag = "--" + name.replace("_", "-")
        kind = type(full)
        parser.add_argument(flag, type=kind, help=f"{HELP[name]} ({full}; quick {quick})")
    parser.add_argument("--results-dir", default=str(BENCH / "results"), help="JSON and charts")
    parser.add_argument("--report", default=str(BENCH / "REPORT.md"), help="the Markdown report")
    parser.add_argument("--keep", action="store_true", help="keep peer logs even on success")
    args = parser.parse_args(argv)
    for name, (full, quick) in SIZES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    if args.compare and "compare" not in args.only:
        args.only.append("compare")
    unknown = sorted(set(args.only) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {','.join(PARTS)}")
    args.scale = [int(n) for n in str(args.scale).split(",")]
    if any(getattr(args, name) <= 0 for name in SIZES if name not in ("scale", "loss_runs")):
        parser.error("every size must be positive")
    if min([args.nodes, *args.scale]) < 3:
        parser.error("every cluster needs at least 3 peers (a majority must survive a kill)")
    return args


# ---------------------------------------------------------------- machine facts


def machine() -> dict[str, Any]:
    """What the figures depend on: CPUs, memory, load, versions."""
    cpuinfo = _read("/proc/cpuinfo")
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), "")
    meminfo = next((ln.split()[1] for ln in _read("/proc/meminfo") if ln.startswith("MemTotal")), 0)
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model or platform.processor(),
        "memory_mib": int(meminfo) // 1024,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in ("aiohttp", "orjson", "matplotlib")},
        "git": _git(),
    }


def loadavg() -> list[float]:
    return [float(x) for x in _read("/proc/loadavg")[0].split()[:3]]


def cluster_config() -> dict[str, Any]:
    config = base_config()
    names = ("heartbeat_interval", "suspect_after", "failure_timeout", "election_timeout")
    names += ("slots", "prefetch", "policy", "submit_wait", "retry_base", "retry_max")
    return {name: getattr(config, name) for name in names}


def _read(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except OSError:
        return [""]


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git() -> str | None:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() or None


# ------------------------------------------------------------------------ parts


def started(size: int, data_dir: Path) -> Cluster:
    """A started cluster of `size` peers whose highest id leads (the settled leader)."""
    cluster = Cluster(size, data_dir, log_level="WARNING")
    try:
        cluster.start_all()
        cluster.wait_for_leader(max(cluster.ids), timeout=START_TIMEOUT)
    except BaseException:
        cluster.stop_all()
        raise
    return cluster


def kills(cluster: Cluster, count: int, settle: float) -> list[dict[str, Any]]:
    samples = []
    for kill_no in range(1, count + 1):
        samples.append(failover.measure_failover(cluster, kill_no, settle))
        print(f"  kill {kill_no}: failover {samples[-1]['failover_s'] * 1000:.0f} ms", flush=True)
    return samples


def part_failover(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    with started(args.nodes, data_dir) as cluster:
        samples = kills(cluster, args.kills, args.settle)
    return {
        "nodes": args.nodes,
        "samples": samples,
        "failover": failover.summary(samples),
        "write_accepted": failover.summary(samples, "write_accepted_s"),
    }


def _submit(args: argparse.Namespace, parts: str) -> dict[str, Any]:
    load_args = argparse.Namespace(
        nodes=args.nodes,
        clients=args.clients,
        seconds=args.seconds,
        batch=args.batch,
        latency=args.latency,
        parts=parts,
    )
    return submit.run(load_args)


def part_submit(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    return _submit(args, "single,batch")


def part_latency(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    return _submit(args, "latency,done")


def part_e2e(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    with started(args.nodes, data_dir) as cluster:
        result = e2e.measure_throughput(cluster, args.tasks, E2E_BATCH, E2E_POSTERS)
    return {"nodes": args.nodes, **result}


def part_compare(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Huey on Redis under the same loads, with as many worker threads as a peer has
    slots; {"skipped": why} when it is not installed."""
    slots = base_config().slots
    sizes = (args.clients, args.seconds, args.latency, args.tasks)
    result: dict[str, Any] = compare.run(*sizes, slots)
    return result


def part_loss(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    samples = []
    with started(args.nodes, data_dir) as cluster:
        slots = cluster.config.slots
        for variant, count in (("full", slots * args.nodes), ("spare", slots * (args.nodes - 1))):
            for run_no in range(args.loss_runs):
                sample = e2e.measure_loss(cluster, run_no, count, args.loss_sleep, variant)
                print(f"  {variant} {run_no}: rerunning {sample['rerunning_s']:.2f} s", flush=True)
                samples.append(sample)
    summaries = {
        variant: {key: e2e.summary(chosen, key) for key in ("failed_s", "rerunning_s")}
        for variant in ("full", "spare")
        if (chosen := [s for s in samples if s["variant"] == variant])
    }
    return {"nodes": args.nodes, "sleep_s": args.loss_sleep, "samples": samples, **summaries}


def rss_mib(cluster: Cluster) -> dict[int, float]:
    """Resident memory of each running peer process, from /proc/<pid>/status."""
    out = {}
    for n in cluster.running_ids():
        for line in _read(f"/proc/{cluster.pid(n)}/status"):
            if line.startswith("VmRSS:"):
                out[n] = int(line.split()[1]) / 1024
    return out


def measure_idle(cluster: Cluster, seconds: float) -> dict[str, Any]:
    """CPU of each peer, as percent of one core, over `seconds` of doing nothing."""
    leader = cluster.wait_for_leader(timeout=START_TIMEOUT)
    e2e.wait_settled(cluster, leader)
    load0, cpu0, t0 = loadavg(), e2e.peer_cpu(cluster), time.monotonic()
    time.sleep(seconds)  # no requests of ours: only the peers' own gossip and heartbeats
    cpu1, elapsed = e2e.peer_cpu(cluster), time.monotonic() - t0
    after = cluster.wait_for_leader(timeout=START_TIMEOUT)
    pct = {n: (cpu1[n] - cpu0[n]) / elapsed * 100 for n in cpu1 if n in cpu0}
    return {
        "seconds": elapsed,
        "cpu_pct_by_peer": pct,
        "cpu_pct_mean": sum(pct.values()) / len(pct),
        "cpu_pct_max": max(pct.values()),
        "leader_before": leader,
        "leader_after": after,
        "loadavg_before": load0,
        "loadavg_after": loadavg(),
    }


def scale_point(size: int, args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    with started(size, data_dir) as cluster:
        idle = measure_idle(cluster, args.idle)
        idle_rss = rss_mib(cluster)
        print(f"  {size} peers idle: {idle['cpu_pct_mean']:.1f}% of a core", flush=True)
        throughput = e2e.measure_throughput(cluster, args.scale_tasks, E2E_BATCH, E2E_POSTERS)
        loaded_rss = rss_mib(cluster)
        print(f"  {size} peers: {throughput['per_second']:.0f} tasks/s", flush=True)
        samples = kills(cluster, args.scale_kills, args.settle)
    return {
        "nodes": size,
        "idle": idle,
        "rss_mib_idle": idle_rss,
        "rss_mib_idle_max": max(idle_rss.values()),
        "rss_mib_after_load": loaded_rss,
        "rss_mib_after_load_max": max(loaded_rss.values()),
        "throughput": throughput,
        "failover_samples": samples,
        "failover": failover.summary(samples),
    }


def part_scale(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    points = []
    for size in args.scale:
        points.append(scale_point(size, args, data_dir / f"n{size}"))
    return {"points": points}


def part_profile(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    return idle_profile.profile_leader(args.nodes, args.idle, data_dir)


RUNNERS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "failover": part_failover,
    "submit": part_submit,
    "latency": part_latency,
    "e2e": part_e2e,
    "scale": part_scale,
    "loss": part_loss,
    "profile": part_profile,
    "compare": part_compare,
}


# ------------------------------------------------------------------------- main


def run_parts(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    """Every chosen part in turn; a failed part records its error and the rest go on."""
    parts: dict[str, Any] = {}
    for name in PARTS:
        if name not in args.only:
            continue
        print(f"== {name} (load average {loadavg()[0]:.1f})", flush=True)
        t0 = time.monotonic()
        try:
            parts[name] = RUNNERS[name](args, data_dir / name)
        except Exception as exc:  # any failure: keep it in the report, run the other parts
            print(f"  FAILED: {str(exc)[:2000]}", file=sys.stderr, flush=True)
            trace = traceback.format_exc(limit=-4)
            parts[name] = {"error": f"{type(exc).__name__}: {exc}"[:3000] + "\n" + trace[-1500:]}
        parts[name]["part_seconds"] = time.monotonic() - t0
        print(f"   {name} took {parts[name]['part_seconds']:.0f} s", flush=True)
    return parts


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y-%m-%d")
    stem = stamp + ("-quick" if args.quick else "")
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="bench-run-"))
    result: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick,
        "machine": machine(),
        "loadavg_start": loadavg(),
        "config": cluster_config(),
        "sizes": {name: getattr(args, name) for name in SIZES} | {"parts": args.only},
    }
    t0 = time.monotonic()
    result["parts"] = run_parts(args, data_dir)
    result["seconds"] = time.monotonic() - t0
    result["loadavg_end"] = loadavg()
    json_path = results_dir / f"{stem}.json"
    report.write(result, json_path, Path(args.report))
    failed = sorted(name for name, part in result["parts"].items() if "error" in part)
    if failed or args.keep:
        print(f"peer logs kept in {data_dir}")
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"wrote {json_path} and {args.report} in {result['seconds']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
