"""The core's tunables and their defaults: the one place they are spelled.

`peer.config` reads them from `cluster.toml` (`ClusterConfig.settings()`); the election
and membership take the parts they need (`election_timings`, `membership_timings`), so
a default changes here or nowhere. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass

from election import Timings
from peer.protocol.membership import MembershipTimings

POLICIES = ("fifo", "priority", "fair")


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """One queue's policy (`[queues.NAME]` in cluster.toml)."""

    weight: float = 1.0  # its share under the fair policy, relative to the others'
    max_running: int | None = None  # running attempts of the queue, cluster-wide, at most
    rate: float | None = None  # starts per second at most (a token bucket)
    burst: float | None = None  # starts the bucket holds (default: one second's worth)

    @property
    def capacity(self) -> float:
        if self.burst is not None:
            return self.burst
        return max(1.0, self.rate or 1.0)


@dataclass(frozen=True, slots=True)
class Settings:
    heartbeat_interval: float = 0.1  # seconds between heartbeats (and gossip rounds)
    suspect_after: float = 0.3  # seconds without news before a peer is suspect
    failure_timeout: float = 0.5  # ... and dead; also a leader's lease on its majority
    election_timeout: float = 0.2  # seconds a probe or a claim waits for its answers
    fanout: int = 3  # gossip targets per round in clusters of more than 9 peers
    max_batch: int = 512  # entries per Append or LogChunk at most
    max_append_bytes: int = 1 << 20  # ... and characters of commands (past the first)
    slots: int = 4  # attempts a peer runs at once
    prefetch: int = 4  # a worker holds up to slots x prefetch assigned attempts (see README)
    prefetch_below: float = 0.1  # ... of kinds whose attempts took less (seconds, mean)
    policy: str = "fifo"  # fifo | priority | fair
    retry_base: float = 0.5  # seconds of backoff after a first failed attempt
    retry_max: float = 30.0  # the longest backoff
    max_catch_up: int = 100  # ticks a schedule with catch_up = "all" fires late at most
    priority_aging: float = 60.0  # priority policy: a waiting task gains a level this often
    queues: tuple[tuple[str, QueuePolicy], ...] = ()  # per-queue policies, by name
    keep_finished: float | None = None  # seconds a finished task is kept whole (None: ever)
    keep_trimmed: float | None = None  # ... then kept trimmed (None: as long again)
    max_finished: int | None = None  # finished tasks kept per queue at most (None: any)
    keep_keys: float = 86400.0  # seconds a forgotten task's key still deduplicates
    max_forget: int = 2000  # tasks one retention entry trims or forgets at most
    snapshot_every: int = 20000  # entries between snapshots (at multiples; 0: never)
    snapshot_bytes: int = 2 << 20  # ... and characters of entries between them (0: never)
    snapshot_task_chars: int = 64  # ... at least this many per task held (0: fixed steps)
    snapshot_keep: int = 500  # entries kept before a snapshot (for followers behind) ...
    snapshot_chunk: int = 1 << 18  # characters of a snapshot per message

    def election_timings(self) -> Timings:
        return Timings(self.heartbeat_interval, self.election_timeout, self.failure_timeout)

    def membership_timings(self) -> MembershipTimings:
        return MembershipTimings(
            self.heartbeat_interval, self.suspect_after, self.failure_timeout, self.fanout
        )
