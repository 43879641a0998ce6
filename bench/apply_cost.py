"""What every peer pays per task to apply the log: one task's submit, assign and finish,
decoded from their text and applied to a `TaskTable`, in one process (no network, no
disk, no event loop), so the figure is steady enough to compare two versions.

    python bench/apply_cost.py [--tasks 20000] [--batch 500] [--rounds 5] [--profile]

Builds the log a 20,000-task end-to-end run writes (submits of `--batch` echo tasks,
assigns and finishes of 40 tasks each, as a busy leader's rounds do), then applies it
to fresh tables `--rounds` times and prints the median microseconds per task, with the
share of decoding. `--profile` prints where the time goes (cProfile, top 20).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peer.protocol.commands import (  # noqa: E402
    Assign,
    Assignment,
    Command,
    Finish,
    Outcome,
    Submit,
    TaskSpec,
    decode_command,
    encode_command,
)
from peer.protocol.tasks import TaskTable  # noqa: E402

ROUND = 40  # tasks per assign or finish entry


def build_log(tasks: int, batch: int) -> list[str]:
    """The entries' texts: every submit, then rounds of assigns and finishes."""
    log: list[Command] = []
    for start in range(0, tasks, batch):
        specs = tuple(TaskSpec("echo", args=i) for i in range(start, min(tasks, start + batch)))
        log.append(Submit(float(start), specs, f"rid{start}"))
    for first in range(1, tasks + 1, ROUND):
        ids = range(first, min(tasks + 1, first + ROUND))
        log.append(Assign(1.0, tuple(Assignment(t, 1, 1 + t % 5, 1) for t in ids)))
        log.append(Finish(2.0, tuple(Outcome(t, 1, True, f"[{t},1]") for t in ids)))
    return [encode_command(c) for c in log]


def apply_all(texts: list[str]) -> TaskTable:
    table = TaskTable()
    for index, text in enumerate(texts, start=1):
        table.apply(index, text)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    texts = build_log(args.tasks, args.batch)
    applying, decoding = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        table = apply_all(texts)
        applying.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for text in texts:
            decode_command(text)
        decoding.append(time.perf_counter() - t0)
    assert table.counts["succeeded"] == args.tasks, table.counts
    per_task = statistics.median(applying) / args.tasks * 1e6
    decode = statistics.median(decoding) / args.tasks * 1e6
    print(f"{per_task:.1f} us per task to decode and apply its submit, assign and finish")
    print(f"  of which decoding {decode:.1f} us ({decode / per_task:.0%})")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(apply_all, texts)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
