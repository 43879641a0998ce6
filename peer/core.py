"""One peer's protocol core: membership and election wired together, still pure.

`PeerCore` is what both the real driver (`peer.node`) and the simulator (`tests/sim`)
run. It takes ticks and messages with `now` passed in and returns one `CoreReady` batch:
state to persist, messages to send, events to report. No I/O, clock or global random.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from election import BullyElection, HardState, LogPosition, Role, Timings
from election.messages import ALL_MESSAGES, Message
from peer.membership import Gossip, MembershipTable, MembershipTimings

PeerMessage = Message | Gossip


@dataclass(frozen=True, slots=True)
class Settings:
    heartbeat_interval: float = 0.1
    suspect_after: float = 0.3
    failure_timeout: float = 0.5
    election_timeout: float = 0.2

    def election_timings(self) -> Timings:
        return Timings(self.heartbeat_interval, self.election_timeout, self.failure_timeout)

    def membership_timings(self) -> MembershipTimings:
        return MembershipTimings(self.heartbeat_interval, self.suspect_after, self.failure_timeout)


@dataclass(slots=True)
class CoreReady:
    """One batch of output: persist `hard_state`, then send `messages`, then report."""

    hard_state: HardState | None = None
    messages: list[tuple[int, PeerMessage]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


class PeerCore:
    def __init__(
        self,
        node_id: int,
        peers: Iterable[int],
        settings: Settings,
        rng: random.Random,
        hard_state: HardState | None = None,
        incarnation: int = 1,
    ) -> None:
        peers = tuple(peers)
        self.id = node_id
        self.settings = settings
        self.membership = MembershipTable(
            node_id, peers, incarnation, settings.membership_timings(), rng
        )
        self.election = BullyElection(node_id, peers, settings.election_timings(), rng, hard_state)
        self._gossip_out: list[tuple[int, PeerMessage]] = []
        self._events: list[str] = []

    # ------------------------------------------------------------------ inputs

    def tick(self, now: float) -> None:
        self._sync_log()
        self.election.tick(now, self.membership.live(now))
        self._publish_local()
        self._gossip_out.extend(self.membership.tick(now))

    def receive(self, now: float, message: PeerMessage) -> None:
        if isinstance(message, Gossip):
            for peer in self.membership.merge(now, message):
                self._events.append(f"peer {peer} restarted")
            return
        if isinstance(message, ALL_MESSAGES):
            self._sync_log()
            self.election.step(now, message)

    def ready(self) -> CoreReady:
        out = self.election.ready()
        batch = CoreReady(out.hard_state, [], self._events + out.events)
        batch.messages = [(e.to, e.message) for e in out.messages] + self._gossip_out
        self._gossip_out, self._events = [], []
        return batch

    # ----------------------------------------------------------------- queries

    @property
    def role(self) -> Role:
        return self.election.role

    @property
    def leader(self) -> int | None:
        return self.election.leader

    @property
    def is_ready_leader(self) -> bool:
        return self.election.role is Role.LEADER

    def known_leader(self) -> int | None:
        """The leader this peer follows (itself when leading), or None."""
        return self.election.leader

    def view(self, now: float) -> dict[str, Any]:
        """This peer's view of the cluster, in the shape of `GET /cluster` (minus urls)."""
        members = []
        for peer in (self.id, *self.membership.others):
            digest = self.membership.digest(peer)
            seen = self.membership.last_seen(peer, now)
            members.append(
                {
                    "id": peer,
                    "status": self.membership.status(peer, now).value,
                    "role": digest.role if digest else None,
                    "term": digest.term if digest else None,
                    "last_seen_ms": None if seen is None else round(seen * 1000),
                }
            )
        return {
            "id": self.id,
            "role": self.election.role.value,
            "term": self.election.term,
            "leader": self.election.leader,
            "ready": self.is_ready_leader or self.election.leader is not None,
            "commit_index": 0,
            "last_index": 0,
            "members": members,
        }

    # ----------------------------------------------------------------- helpers

    def _sync_log(self) -> None:
        self.election.set_log(LogPosition(), caught_up=self.election.leader is not None)

    def _publish_local(self) -> None:
        self.membership.set_local(
            role=self.election.role.value, term=self.election.term, leader=self.election.leader
        )
