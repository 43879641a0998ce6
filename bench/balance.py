"""How evenly uneven long tasks spread over the workers: the price of prefetch.

    python bench/balance.py [--nodes 5] [--tasks 60] [--rounds 3] [--seed 7] [--json OUT]

Starts a cluster on free loopback ports (tests/harness.py) for each setting compared:

- `adaptive`: the default, prefetch earned per kind (`prefetch_below`, 0.1 s);
- `fixed`: `prefetch_below` so high that every kind seen finish is prefetched (how
  prefetch worked before it was earned);
- `prefetch 1`: one attempt per slot, the setting long tasks used to need.

Each cluster first runs one `sleep` task of that spread per slot, unmeasured (so every
setting has seen the kind finish), then `--rounds` times submits `--tasks` `sleep`
tasks of seeded uneven lengths (0.05 to 0.8 s) in one batch to the leader and measures
the makespan: first submit until the leader counts them all succeeded. The bound below
any schedule is the larger of the longest task and the total work spread over every
slot. Prints the median makespan of each setting and its ratio to that bound.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for `tests.harness`
sys.path.insert(0, str(ROOT / "bench"))

from e2e import get_json, post_json, wait_settled  # noqa: E402

from tests.harness import Cluster  # noqa: E402

SLOTS = 4
SETTINGS = {
    "adaptive": {"prefetch": 4},
    "fixed": {"prefetch": 4, "prefetch_below": 1e9},
    "prefetch 1": {"prefetch": 1},
}
ROUND_TIMEOUT = 60.0  # seconds one round may take at most


def durations(seed: int, count: int) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(0.05, 0.8), 3) for _ in range(count)]


def run_round(cluster: Cluster, leader: int, lengths: list[float]) -> float:
    """Seconds from the submit until all `lengths` sleep tasks succeeded."""
    base = get_json(cluster, leader, "/cluster")["tasks"]["succeeded"]
    tasks = [{"kind": "sleep", "args": {"seconds": seconds}} for seconds in lengths]
    started = time.monotonic()
    post_json(cluster, leader, "/tasks/batch", {"tasks": tasks})
    deadline = started + ROUND_TIMEOUT
    while time.monotonic() < deadline:
        view = get_json(cluster, leader, "/cluster")
        if view is not None and view["tasks"]["succeeded"] >= base + len(lengths):
            return time.monotonic() - started
        time.sleep(0.01)
    raise AssertionError(f"{len(lengths)} sleep tasks not done within {ROUND_TIMEOUT:.0f}s")


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    overrides = {"slots": SLOTS, **SETTINGS[name]}
    with tempfile.TemporaryDirectory() as tmp, Cluster(args.nodes, tmp, overrides, "WARNING") as c:
        c.start_all()
        leader = c.wait_for_leader(timeout=30)
        wait_settled(c, leader)
        run_round(c, leader, durations(args.seed - 1, SLOTS * args.nodes))  # seen to finish
        makespans = []
        for round_no in range(args.rounds):
            lengths = durations(args.seed + round_no, args.tasks)
            makespans.append(run_round(c, leader, lengths))
    return {"makespans": makespans, "median": statistics.median(makespans)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    bounds = []
    for round_no in range(args.rounds):
        lengths = durations(args.seed + round_no, args.tasks)
        bounds.append(max(max(lengths), sum(lengths) / (SLOTS * args.nodes)))
    bound = statistics.median(bounds)
    results: dict[str, Any] = {"bound": bound, "settings": {}}
    print(f"{args.tasks} sleep tasks of 0.05-0.8 s on {args.nodes} x {SLOTS} slots")
    print(f"bound below any schedule (median of rounds): {bound:.2f} s")
    for name in SETTINGS:
        result = measure(name, args)
        results["settings"][name] = result
        spans = ", ".join(f"{s:.2f}" for s in result["makespans"])
        ratio = result["median"] / bound
        print(f"{name:>11}: median {result['median']:.2f} s ({ratio:.2f}x bound; {spans})")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
