"""Per-queue policies, pure: which queue the leader serves next (`QueueChooser`), and
the start budget of rate-limited queues, kept from the log (`RateBook`).

- `weight` (fair policy): weighted deficit round robin. Each visit to a queue adds its
  weight to its deficit; it is served while the deficit holds a whole start; an empty
  queue loses its deficit (no credit banked while idle). Saturated queues with weights
  3 and 1 so start 3:1.
- `max_running`: a cluster-wide cap on running (and assigned) attempts of the queue.
- `rate`: starts per second, a token bucket of `burst` (default: one second's worth).
  Its state changes only when an `Assign` entry is applied, with the entry's time, so
  every peer holds the same bucket and a new leader keeps the budget the old one left.

No I/O; every time comes in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from peer.protocol.settings import QueuePolicy

DEFAULT_POLICY = QueuePolicy()


@dataclass(slots=True)
class Bucket:
    tokens: float
    at: float | None = None  # the time of the last start taken


@dataclass(slots=True)
class RateBook:
    """Token buckets of the queues that have a `rate`, fed by applied assignments."""

    policies: Mapping[str, QueuePolicy]
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def started(self, queue: str, at: float) -> None:
        """An applied assignment of a task of `queue`, at the entry's time."""
        policy = self.policies.get(queue)
        if policy is None or policy.rate is None:
            return
        bucket = self._bucket(queue, policy)
        bucket.tokens = self._level(bucket, policy, at) - 1.0
        bucket.at = at

    def available(self, queue: str, wall: float) -> float:
        """Starts the queue may take at `wall` (infinite without a rate)."""
        policy = self.policies.get(queue)
        if policy is None or policy.rate is None:
            return float("inf")
        return self._level(self._bucket(queue, policy), policy, wall)

    def _bucket(self, queue: str, policy: QueuePolicy) -> Bucket:
        if queue not in self.buckets:
            self.buckets[queue] = Bucket(policy.capacity)
        return self.buckets[queue]

    @staticmethod
    def _level(bucket: Bucket, policy: QueuePolicy, at: float) -> float:
        assert policy.rate is not None
        refill = 0.0 if bucket.at is None else max(0.0, at - bucket.at) * policy.rate
        return min(policy.capacity, bucket.tokens + refill)


class QueueChooser:
    """The fair policy's weighted deficit round robin over the queues with ready work."""

    def __init__(self, policies: Mapping[str, QueuePolicy]) -> None:
        self.policies = dict(policies)
        self._ring: deque[str] = deque()
        self._deficit: dict[str, float] = {}
        self._credited = False  # the head of the ring got its weight on this visit

    def add(self, queue: str) -> None:
        if queue not in self._deficit:
            self._deficit[queue] = 0.0
            self._ring.append(queue)

    def reset(self) -> None:
        self._ring, self._deficit, self._credited = deque(), {}, False

    def weight(self, queue: str) -> float:
        return self.policies.get(queue, DEFAULT_POLICY).weight

    def next(self, servable: Callable[[str], bool], empty: Callable[[str], bool]) -> str | None:
        """The queue to serve one start from, or None when no queue may be served now;
        `servable(q)`: it has a ready task it may start; `empty(q)`: it has none at all."""
        least = min((self.weight(q) for q in self._ring), default=1.0)
        for _ in range(len(self._ring) * (int(1.0 / least) + 2)):
            queue = self._ring[0]
            if not servable(queue):
                if empty(queue):
                    self._deficit[queue] = 0.0  # no credit banked while idle
                self._move_on()
                continue
            if self._deficit[queue] < 1.0 and not self._credited:
                self._deficit[queue] += self.weight(queue)
                self._credited = True
            if self._deficit[queue] >= 1.0:
                self._deficit[queue] -= 1.0
                return queue
            self._move_on()
        return None

    def _move_on(self) -> None:
        self._ring.rotate(-1)
        self._credited = False
