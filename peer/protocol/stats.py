"""Cluster-wide task totals, kept by applying the log: `TaskStats`.

Every peer applies the same entries, so every peer holds the same totals: tasks
submitted per (queue, kind), finished per (queue, kind, outcome), failed attempts per
reason (error, timeout, worker_lost), and histograms of how long attempts ran and how
long tasks waited to start (times from the entries, never a local clock). The metrics
endpoint reads these at scrape time. Pure data.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

# seconds; an attempt's run and a task's wait fall in the first bucket they fit
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
FAILURE_REASONS = ("error", "timeout", "worker_lost")


@dataclass(slots=True)
class Histogram:
    """Counts per bucket of `BUCKETS` (the last one past them all), their sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound, count at or below it) per bucket, `+Inf` last."""
        out, running = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


@dataclass(slots=True)
class TaskStats:
    submitted: Counter[tuple[str, str]] = field(default_factory=Counter)  # (queue, kind)
    finished: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # + outcome
    attempts_failed: Counter[str] = field(default_factory=Counter)  # reason
    run_seconds: Histogram = field(default_factory=Histogram)
    wait_seconds: Histogram = field(default_factory=Histogram)


def failure_reason(message: str) -> str:
    """How an attempt failed, from the error the leader or the worker recorded."""
    if message.startswith("timeout") or " timed out" in message:
        return "timeout"
    if message.startswith("worker ") and message.endswith((" lost", " restarted")):
        return "worker_lost"
    return "error"
