"""A fake network for the simulator: per-link queues with loss, delay, duplication,
reordering (by random delay) and partitions (any set of cut directed links).

Everything random comes from the one `random.Random` the simulation was seeded with.
"""

from __future__ import annotations

import heapq
import itertools
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Faults:
    loss: float = 0.0  # probability a message is dropped
    duplicate: float = 0.0  # probability a message is delivered twice
    min_delay: float = 0.001
    max_delay: float = 0.02
    long_delay: float = 0.0  # probability a message is held for up to `long_max` seconds
    replay: float = 0.0  # probability a copy of a message arrives again, much later
    long_max: float = 3.0


@dataclass(order=True, slots=True)
class _InFlight:
    deliver_at: float
    seq: int
    src: int = field(compare=False)
    dst: int = field(compare=False)
    message: Any = field(compare=False)


class SimNetwork:
    def __init__(self, rng: random.Random, faults: Faults | None = None) -> None:
        self.rng = rng
        self.faults = faults or Faults()
        self.cut: set[tuple[int, int]] = set()
        self._queue: list[_InFlight] = []
        self._seq = itertools.count()
        self.sent = 0
        self.dropped = 0

    # -------------------------------------------------------------- partitions

    def partition(self, *groups: set[int]) -> None:
        """Cut every link between different groups (both directions)."""
        self.cut = set()
        for a, b in itertools.permutations(range(len(groups)), 2):
            self.cut |= {(x, y) for x in groups[a] for y in groups[b]}

    def cut_link(self, a: int, b: int) -> None:
        self.cut |= {(a, b), (b, a)}

    def cut_one_way(self, a: int, b: int) -> None:
        """`a` can no longer reach `b`; `b` still reaches `a`."""
        self.cut |= {(a, b)}

    def heal(self) -> None:
        self.cut = set()

    def connected(self, a: int, b: int) -> bool:
        return (a, b) not in self.cut and (b, a) not in self.cut

    # ---------------------------------------------------------------- delivery

    def send(self, now: float, src: int, dst: int, message: Any) -> None:
        self.sent += 1
        copies = 2 if self.rng.random() < self.faults.duplicate else 1
        for _ in range(copies):
            if self.rng.random() < self.faults.loss:
                self.dropped += 1
                continue
            delay = self.rng.uniform(self.faults.min_delay, self.faults.max_delay)
            if self.rng.random() < self.faults.long_delay:
                delay = self.rng.uniform(self.faults.max_delay, self.faults.long_max)
            self._enqueue(now + delay, src, dst, message)
            if self.rng.random() < self.faults.replay:  # a stale copy, replayed later
                self._enqueue(now + self.rng.uniform(0.1, self.faults.long_max), src, dst, message)

    def _enqueue(self, at: float, src: int, dst: int, message: Any) -> None:
        heapq.heappush(self._queue, _InFlight(at, next(self._seq), src, dst, message))

    def due(self, now: float) -> list[tuple[int, int, Any]]:
        """Messages whose delivery time has come and whose link is not cut."""
        out = []
        while self._queue and self._queue[0].deliver_at <= now:
            item = heapq.heappop(self._queue)
            if (item.src, item.dst) in self.cut:
                self.dropped += 1
                continue
            out.append((item.src, item.dst, item.message))
        return out
