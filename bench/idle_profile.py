"""Where an idle peer's CPU goes: the leader of a settled cluster, under cProfile.

    python bench/idle_profile.py [--nodes 5] [--seconds 30] [--top 15]

Starts a cluster (tests/harness.py), stops its leader (the highest id) with SIGTERM and
starts that peer again under `cProfile` with a CPU-time timer (so waiting in epoll costs
nothing), waits until it leads again, profiles it for `--seconds` while nothing is sent
(SIGUSR1 starts the profiler, SIGUSR2 stops it and writes the profile, so start-up is
left out), then stops it with SIGTERM. Reports the CPU the profiled peer used, its share
by area (aiohttp, asyncio, the peer's own code, ...) and the functions with the most own
time. The profiler slows the peer, so read shares, not absolute cost. `profile_leader` is
used by bench/run.py.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for `tests.harness`

from tests.harness import Cluster  # noqa: E402

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
DUMP_TIMEOUT = 10.0
# Runs `python -m peer serve ...`; argv[1] is the profile's file. SIGUSR1 starts a CPU-time
# profiler, SIGUSR2 stops it and writes the file.
PROFILED = """
import cProfile, runpy, signal, sys, time
out = sys.argv[1]
sys.argv = ["peer", *sys.argv[2:]]
profiler = cProfile.Profile(time.process_time)
def start(*_):
    profiler.enable()
def stop(*_):
    profiler.disable()
    profiler.dump_stats(out)
signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, stop)
runpy.run_module("peer", run_name="__main__", alter_sys=True)
"""
AREAS = (  # first match wins: (substring of the file name, area)
    ("/peer/", "peer (this project)"),
    ("/election/", "election (this project)"),
    ("aiohttp", "aiohttp"),
    ("multidict", "aiohttp"),
    ("yarl", "aiohttp"),
    ("asyncio", "asyncio event loop"),
    ("selectors", "asyncio event loop"),
    ("hmac", "signing (hmac, hashlib)"),
    ("hashlib", "signing (hmac, hashlib)"),
    ("sqlite3", "sqlite3"),
    ("logging", "logging"),
)


def area(key: tuple[str, int, str]) -> str:
    filename, _, name = key
    where = filename if filename != "~" else name
    return next((label for part, label in AREAS if part in where), "other (stdlib, builtins)")


def summarise(path: Path, seconds: float, top: int) -> dict[str, Any]:
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = sum(row[2] for row in stats.values()) or 1e-9
    by_area: dict[str, float] = {}
    for key, row in stats.items():
        by_area[area(key)] = by_area.get(area(key), 0.0) + row[2]
    ranked = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    ours = [item for item in stats.items() if area(item[0]).endswith("(this project)")]
    hot = sorted(ours, key=lambda item: item[1][3], reverse=True)[:top]
    return {
        "seconds": seconds,
        "profiled_cpu_s": total,
        "cpu_pct": total / seconds * 100,
        "by_area_pct": {
            k: v / total * 100 for k, v in sorted(by_area.items(), key=lambda x: -x[1])
        },
        "top": [_row(key, row, total) for key, row in ranked],
        "project_cumulative": [_row(key, row, total) for key, row in hot],
    }


def _row(key: tuple[str, int, str], row: tuple[Any, ...], total: float) -> dict[str, Any]:
    filename, line, name = key
    where = name if filename == "~" else f"{Path(filename).parent.name}/{Path(filename).name}"
    return {
        "function": where if filename == "~" else f"{where}:{line} {name}",
        "calls": row[1],
        "own_pct": row[2] / total * 100,
        "cumulative_pct": row[3] / total * 100,
    }


def start_profiled(cluster: Cluster, n: int, out: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", PROFILED, str(out), "serve", "--config", str(cluster.config_path)]
    log = open(cluster.data_dir / f"node-{n}-profiled.log", "ab")  # noqa: SIM115 - child owns it
    with log:
        return subprocess.Popen(
            [*cmd, "--id", str(n), "--log-level", "WARNING"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cluster.data_dir,
            env=env,
        )


def profile_leader(size: int, seconds: float, data_dir: Path, top: int = 15) -> dict[str, Any]:
    """The CPU profile of the leader of `size` idle peers over `seconds`."""
    out = data_dir / "leader.prof"
    with Cluster(size, data_dir, log_level="WARNING") as cluster:
        cluster.start_all()
        leader = max(cluster.ids)
        cluster.wait_for_leader(leader, timeout=START_TIMEOUT)
        cluster.stop(leader)
        proc = start_profiled(cluster, leader, out)
        try:
            others = [n for n in cluster.ids if n != leader]

            def leads() -> bool:
                views = cluster.views(others).values()
                return all(v and v["leader"] == leader and v.get("ready") for v in views)

            cluster.wait_for(leads, START_TIMEOUT, f"profiled peer {leader} to lead", 0.1)
            time.sleep(1.0)  # past the takeover's catch-up traffic
            proc.send_signal(signal.SIGUSR1)
            time.sleep(seconds)
            proc.send_signal(signal.SIGUSR2)
            cluster.wait_for(out.exists, DUMP_TIMEOUT, "the profile to be written", 0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(STOP_TIMEOUT)
    if not out.exists():
        raise RuntimeError(f"the profiled peer wrote no profile (exit {proc.returncode})")
    return {"nodes": size, "peer": leader, **summarise(out, seconds, top)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5, help="peers in the cluster (5)")
    parser.add_argument("--seconds", type=float, default=30.0, help="idle seconds profiled (30)")
    parser.add_argument("--top", type=int, default=15, help="functions listed (15)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        result = profile_leader(args.nodes, args.seconds, Path(tmp), args.top)
    print(f"leader {result['peer']} of {args.nodes}: {result['cpu_pct']:.1f}% of a core profiled")
    for name, pct in result["by_area_pct"].items():
        print(f"  {pct:5.1f}%  {name}")
    for title, key in (("most own time", "top"), ("project, cumulative", "project_cumulative")):
        print(title)
        for row in result[key]:
            own, cum = row["own_pct"], row["cumulative_pct"]
            print(f"  own {own:5.1f}%  cum {cum:5.1f}%  {row['function']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
