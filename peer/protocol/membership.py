"""Gossip membership: who is alive, suspect or dead, as a pure table.

Every `heartbeat_interval` a peer bumps its own heartbeat counter and sends its digest
(per peer: incarnation, counter, role, term, leader, log figures) to the others: all of
them up to `FULL_FANOUT_LIMIT` peers, a random `fanout` beyond. A peer whose counter has
not grown for `suspect_after` is suspect, for `failure_timeout` dead; a peer never heard
from is dead. A restart shows as a higher incarnation. The members change with the configuration
(`set_members`). Time comes in as `now`; no I/O.

`beat` lets the caller send a beat early, to chosen peers, and put the own timer back:
the core uses it to relay gossip through a live leader (see `peer.protocol.core`), and `tick`
stays the fallback that reaches everyone when the relay stops.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum

FULL_FANOUT_LIMIT = 9


class Status(Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class MemberDigest:
    """What one peer says of itself; gossiped onwards unchanged."""

    id: int
    incarnation: int
    counter: int
    role: str = "follower"
    term: int = 0
    leader: int | None = None
    last_index: int = 0
    commit_index: int = 0
    url: str = ""  # where it is reached (a peer that lags the configuration learns it)

    def version(self) -> tuple[int, int]:
        return (self.incarnation, self.counter)


@dataclass(frozen=True, slots=True)
class Gossip:
    sender: int
    members: tuple[MemberDigest, ...]


@dataclass(frozen=True, slots=True)
class MembershipTimings:
    """Membership's clocks (their defaults are `peer.protocol.settings.Settings`')."""

    heartbeat_interval: float
    suspect_after: float
    failure_timeout: float
    fanout: int


@dataclass(slots=True)
class _Record:
    digest: MemberDigest
    changed_at: float  # local time the version last grew


class MembershipTable:
    """One peer's view of the cluster, fed with gossip and ticks."""

    def __init__(
        self,
        node_id: int,
        peers: Iterable[int],
        incarnation: int,
        timings: MembershipTimings,
        rng: random.Random,
    ) -> None:
        self.id = node_id
        self.others = tuple(sorted(set(peers) - {node_id}))
        self.timings = timings
        self.rng = rng
        self.me = MemberDigest(node_id, incarnation, 0)
        self._records: dict[int, _Record] = {}
        self._next_beat = 0.0
        self._last_beat = float("-inf")

    def set_members(self, members: Iterable[int]) -> None:
        """The configuration changed: gossip with `members` (those removed are
        forgotten; one added is dead until heard from)."""
        self.others = tuple(sorted(set(members) - {self.id}))
        kept = set(self.others)
        self._records = {p: r for p, r in self._records.items() if p in kept}

    def set_local(self, **fields: object) -> None:
        """Update what this peer says of itself (role, term, leader, log figures)."""
        self.me = replace(self.me, **fields)  # type: ignore[arg-type]

    def tick(self, now: float) -> list[tuple[int, Gossip]]:
        """Bump the heartbeat when it is due; returns the gossip to send."""
        if now < self._next_beat:
            return []
        return self.beat(now, self._targets(), self.timings.heartbeat_interval)

    def beat(
        self, now: float, targets: Iterable[int], next_in: float, whole: bool = True
    ) -> list[tuple[int, Gossip]]:
        """Bump the heartbeat now and gossip to `targets` the whole table, or only this
        peer's digest; the own timer is due `next_in` seconds later."""
        self._next_beat = now + next_in
        self._last_beat = now
        self.me = replace(self.me, counter=self.me.counter + 1)
        others = (r.digest for r in self._records.values()) if whole else ()
        gossip = Gossip(self.id, (self.me, *others))
        return [(peer, gossip) for peer in targets]

    def defer(self, until: float) -> None:
        """Hold the own timer back until `until` (a relayed beat is on its way)."""
        self._next_beat = max(self._next_beat, until)

    @property
    def next_beat(self) -> float:
        """When the own timer beats to everyone, unless a `beat` comes first."""
        return self._next_beat

    def since_beat(self, now: float) -> float:
        """Seconds since this peer last bumped its heartbeat."""
        return now - self._last_beat

    def _targets(self) -> Iterable[int]:
        if len(self.others) + 1 <= FULL_FANOUT_LIMIT:
            return self.others
        return self.rng.sample(self.others, min(self.timings.fanout, len(self.others)))

    def merge(self, now: float, gossip: Gossip) -> list[int]:
        """Take in a digest; returns the ids that restarted (a higher incarnation)."""
        restarted = []
        for digest in gossip.members:
            if digest.id == self.id or digest.id not in self.others:
                continue
            known = self._records.get(digest.id)
            if known is None:
                self._records[digest.id] = _Record(digest, now)
            elif digest.version() > known.digest.version():
                if digest.incarnation > known.digest.incarnation:
                    restarted.append(digest.id)
                known.digest, known.changed_at = digest, now
        return restarted

    def status(self, peer: int, now: float) -> Status:
        if peer == self.id:
            return Status.ALIVE
        record = self._records.get(peer)
        if record is None:
            return Status.DEAD
        silent = now - record.changed_at
        if silent < self.timings.suspect_after:
            return Status.ALIVE
        if silent < self.timings.failure_timeout:
            return Status.SUSPECT
        return Status.DEAD

    def live(self, now: float) -> frozenset[int]:
        """Every peer not held dead, this one included."""
        alive = {p for p in self.others if self.status(p, now) is not Status.DEAD}
        return frozenset(alive | {self.id})

    def digest(self, peer: int) -> MemberDigest | None:
        if peer == self.id:
            return self.me
        record = self._records.get(peer)
        return record.digest if record else None

    def last_seen(self, peer: int, now: float) -> float | None:
        """Seconds since the peer's heartbeat last grew; None if never heard from."""
        if peer == self.id:
            return 0.0
        record = self._records.get(peer)
        return None if record is None else now - record.changed_at
