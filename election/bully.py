"""The bully election as a pure state machine: `BullyElection`.

Theory of operation
-------------------
Bully's rule stands: the highest live id leads. Three additions make it safe.

* Terms. Every message carries one. `Coordinator`, `CoordinatorAck`, `Heartbeat` and
  `HeartbeatAck` with a higher term make a peer adopt it and step down to follower; lower
  terms are refused with the current term in the reply (fencing). `Election`, `Alive` and
  `Probe` never change a term, so a peer with a stale view cannot disrupt a live leader.
* Majority confirmation. A claimant first sends `Probe(term + 1)`; peers grant it unless
  their view shows a live peer with a higher id than the claimant (stickiness, bounded by
  `failure_timeout`: a claimant refused for longer than that is granted anyway). With a
  majority of grants it persists `term + 1`, acks itself and sends `Coordinator`. Each
  peer acks at most one claimant per term, persisted before the ack is sent. The claimant
  leads only with acks from a majority, itself included; it then sends heartbeats, and
  steps down when it has not heard from a majority for `failure_timeout` (an isolated
  leader deposes itself).
* Log position. Probes, claims and acks carry `(last_log_term, last_log_index)`; the
  leader learns from its acks which peer holds the most up-to-date log (`best_log`).

A peer that cannot see a majority never starts an election. A follower whose leader has a
lower id, that sees a majority and no live peer above itself, and that has caught up with
the leader, starts one (bully preemption).

Inputs: `tick(now, live)` with the membership view, `step(now, message)`, `set_log(...)`.
Outputs: `ready()` returns a `Ready` (state to persist, messages, events); the driver
persists, then sends. No I/O, no clock reads, randomness from the `random.Random` given.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum, auto

from election.messages import (
    Alive,
    Coordinator,
    CoordinatorAck,
    Election,
    Envelope,
    HardState,
    Heartbeat,
    HeartbeatAck,
    LogPosition,
    Message,
    Probe,
    ProbeReply,
    Ready,
    Role,
)
from election.quorum import Quorum

TIMER_SLACK = 0.001  # seconds past a deadline, so the tick lands on its far side


class Phase(Enum):
    IDLE = auto()  # follower: has a leader, or waits out a backoff
    ELECTING = auto()  # sent Election to higher ids, waiting for Alive
    WAITING = auto()  # a higher peer answered Alive; waiting for it to lead
    PROBING = auto()  # sent Probe(term + 1), counting grants
    CLAIMING = auto()  # sent Coordinator(term), counting acks
    LEADING = auto()


_ROLE_OF_PHASE = {
    Phase.IDLE: Role.FOLLOWER,
    Phase.WAITING: Role.FOLLOWER,
    Phase.ELECTING: Role.CANDIDATE,
    Phase.PROBING: Role.CANDIDATE,
    Phase.CLAIMING: Role.CANDIDATE,
    Phase.LEADING: Role.LEADER,
}


@dataclass(frozen=True, slots=True)
class Timings:
    heartbeat_interval: float = 0.1
    election_timeout: float = 0.2
    failure_timeout: float = 0.5


class BullyElection:
    """One peer's view of the election. See the module docstring."""

    def __init__(
        self,
        node_id: int,
        peers: Iterable[int],
        timings: Timings,
        rng: random.Random,
        hard_state: HardState | None = None,
    ) -> None:
        self.id = node_id
        self.peers = tuple(sorted(set(peers) | {node_id}))
        self.others = tuple(p for p in self.peers if p != node_id)
        self.timings = timings
        self.rng = rng
        state = hard_state or HardState()
        self.term = state.term
        self.voted_for = state.voted_for
        self.role = Role.FOLLOWER
        self._phase = Phase.IDLE
        self.leader: int | None = None
        self.live: frozenset[int] = frozenset({node_id})
        self.log = LogPosition()
        self.caught_up = False
        self.best_log: tuple[int, LogPosition] = (node_id, self.log)
        self._now = 0.0
        self._deadline = 0.0  # when the current phase gives up
        self._not_before = 0.0  # backoff: no new election before this
        self._leader_contact = 0.0
        self._lost_leader: int | None = None  # fell silent; counted out until a leader is known
        self._next_heartbeat = 0.0
        self._quorum = Quorum(self.peers)
        self._heard: dict[int, float] = {}  # leader: last HeartbeatAck per peer
        self._refusing_since: dict[int, float] = {}
        self._refused: set[int] = set()  # peers that refused the current probe
        self._reprobe_at = 0.0  # when to ask the refusers of the current probe again
        self._out = Ready()
        self._dirty = False
        self._handlers: dict[type, Callable[[Message], None]] = {
            Election: self._on_election,  # type: ignore[dict-item]
            Alive: self._on_alive,  # type: ignore[dict-item]
            Probe: self._on_probe,  # type: ignore[dict-item]
            ProbeReply: self._on_probe_reply,  # type: ignore[dict-item]
            Coordinator: self._on_coordinator,  # type: ignore[dict-item]
            CoordinatorAck: self._on_coordinator_ack,  # type: ignore[dict-item]
            Heartbeat: self._on_heartbeat,  # type: ignore[dict-item]
            HeartbeatAck: self._on_heartbeat_ack,  # type: ignore[dict-item]
        }

    # ----------------------------------------------------------------- queries

    @property
    def phase(self) -> Phase:
        return self._phase

    @phase.setter
    def phase(self, phase: Phase) -> None:
        self._phase = phase
        self.role = _ROLE_OF_PHASE[phase]  # read on every message: kept, not looked up

    @property
    def majority(self) -> int:
        return self._quorum.size

    def hard_state(self) -> HardState:
        return HardState(self.term, self.voted_for)

    # ------------------------------------------------------------------ inputs

    def set_log(self, log: LogPosition, caught_up: bool) -> None:
        """The driver reports the local log's end and whether it matches the leader's."""
        self.log = log
        self.caught_up = caught_up

    def tick(self, now: float, live: Iterable[int]) -> None:
        """Advance timers; `live` is every peer the membership view does not hold dead."""
        self._now = now
        self.live = (frozenset(live) | {self.id}) - {self._lost_leader}
        for cand, since in list(self._refusing_since.items()):
            if now - since > 4 * self.timings.failure_timeout:
                del self._refusing_since[cand]  # an old refusal streak has ended
        if self.phase is Phase.LEADING:
            self._tick_leader()
        elif self.phase in (Phase.ELECTING, Phase.WAITING, Phase.PROBING, Phase.CLAIMING):
            self._tick_candidate()
        else:
            self._tick_follower()

    def step(self, now: float, message: Message) -> None:
        """Handle one message from a peer. Unknown senders are ignored."""
        self._now = now
        if message.sender not in self.others:
            return
        self._handlers[type(message)](message)

    def next_timer(self) -> float:
        """When a timer of this election next needs a `tick`, at the latest: the next
        heartbeat when leading; the moment a heard leader would count as silent when
        following; a fifth of a heartbeat from now while an election is under way or no
        leader is known. Ticking more often is always harmless."""
        if self.phase is Phase.LEADING:
            return self._next_heartbeat
        if self.phase is Phase.IDLE and self.leader is not None:
            return self._leader_contact + self.timings.failure_timeout + TIMER_SLACK
        return self._now + self.timings.heartbeat_interval / 5

    def ready(self) -> Ready:
        """Everything produced since the last call; the caller persists, then sends."""
        out, self._out = self._out, Ready()
        if self._dirty:
            out.hard_state = self.hard_state()
            self._dirty = False
        return out

    # ------------------------------------------------------------ role: follower

    def _tick_follower(self) -> None:
        if self.leader is not None and self._leader_is_live():
            if self._should_preempt():
                self._start_election()
            return
        self._forget_leader()
        if self._now >= self._not_before:
            self._start_election()

    def _forget_leader(self) -> None:
        if self.leader is None or self.leader == self.id:
            return
        self._emit(f"leader {self.leader} lost (term {self.term})")
        # its silence is news before gossip calls it dead: count it out right away, so
        # this peer neither waits for it nor refuses a claimant because of it
        self._lost_leader = self.leader
        self.live -= {self.leader}
        self.leader = None

    def _leader_is_live(self) -> bool:
        fresh = self._now - self._leader_contact <= self.timings.failure_timeout
        return fresh and self.leader in self.live

    def _should_preempt(self) -> bool:
        return (
            self.leader is not None
            and self.leader < self.id
            and max(self.live) == self.id
            and self.caught_up
            and self._sees_majority()
        )

    def _sees_majority(self) -> bool:
        return len(self.live) >= self.majority

    # ----------------------------------------------------------- role: candidate

    def _start_election(self) -> None:
        if not self._sees_majority():
            return
        higher = [p for p in self.live if p > self.id]
        if higher:
            self._send_election(higher)
        else:
            self._start_probe()

    def _send_election(self, targets: Iterable[int]) -> None:
        self.phase = Phase.ELECTING
        self._deadline = self._now + self.timings.election_timeout
        for peer in targets:
            self._send(peer, Election(self.term, self.id))

    def _start_probe(self) -> None:
        self.phase = Phase.PROBING
        self._refused = set()
        self._reprobe_at = self._now + self.timings.heartbeat_interval / 2
        self._quorum.reset(self.term + 1)
        self._quorum.grant(self.id)
        self._deadline = self._now + self.timings.election_timeout
        self._emit(f"election: term {self.term + 1} started by {self.id}")
        probe = Probe(self.term + 1, self.id, self.log)
        for peer in self.others:
            self._send(peer, probe)
        if self._quorum.won():  # a cluster of one
            self._claim()

    def _claim(self) -> None:
        self.term += 1
        self.voted_for = self.id
        self._dirty = True
        self.phase = Phase.CLAIMING
        self.leader = None
        self._quorum.reset(self.term)
        self._quorum.grant(self.id)
        self.best_log = (self.id, self.log)
        self._deadline = self._now + self.timings.election_timeout
        claim = Coordinator(self.term, self.id, self.log)
        for peer in self.others:
            self._send(peer, claim)
        if self._quorum.won():
            self._become_leader()

    def _tick_candidate(self) -> None:
        if self.phase is Phase.PROBING and self._refused and self._now >= self._reprobe_at:
            self._reprobe()
        if self._now < self._deadline:
            return
        if self.phase in (Phase.ELECTING, Phase.WAITING) and self._sees_majority():
            self._start_probe()  # nobody higher answered, or it never took over: claim
        else:
            self._back_off()

    def _reprobe(self) -> None:
        """Ask the peers that refused the current probe again. A refusal that named no
        peer this one sees alive comes from a view a few milliseconds behind (the
        refuser had not yet counted the old leader out); a probe changes nothing, so
        asking again is free, and it saves waiting out the whole probe."""
        self._reprobe_at = self._now + self.timings.heartbeat_interval / 2
        probe = Probe(self.term + 1, self.id, self.log)
        for peer in sorted(self._refused):
            self._send(peer, probe)
        self._refused = set()

    def _back_off(self) -> None:
        self.phase = Phase.IDLE
        self._not_before = self._now + self.timings.election_timeout * self.rng.uniform(0.5, 1.5)

    # -------------------------------------------------------------- role: leader

    def _become_leader(self) -> None:
        self.phase = Phase.LEADING
        self.leader = self.id
        self._lost_leader = None
        self._heard = {peer: self._now for peer in self._quorum.granted}
        self._emit(f"peer {self.id} leads, term {self.term}")
        self._broadcast_heartbeat()

    def _tick_leader(self) -> None:
        horizon = self._now - self.timings.failure_timeout
        recent = {peer for peer, at in self._heard.items() if at >= horizon}
        if len(recent | {self.id}) < self.majority:
            self._emit(f"peer {self.id} lost its majority, steps down (term {self.term})")
            self._step_down(self.term)
            return
        if self._now >= self._next_heartbeat:
            self._broadcast_heartbeat()

    def _broadcast_heartbeat(self) -> None:
        self._next_heartbeat = self._now + self.timings.heartbeat_interval
        beat = Heartbeat(self.term, self.id)
        for peer in self.others:
            self._send(peer, beat)

    # ----------------------------------------------------------------- handlers

    def _on_election(self, msg: Election) -> None:
        if msg.sender > self.id:
            return
        self._send(msg.sender, Alive(self.term, self.id))
        if self.phase is Phase.LEADING:
            self._send(msg.sender, Heartbeat(self.term, self.id))
        elif self.phase in (Phase.IDLE, Phase.WAITING) and not self._leader_is_live():
            self._forget_leader()
            self._start_election()

    def _on_alive(self, msg: Alive) -> None:
        if self.phase is Phase.ELECTING and msg.sender > self.id:
            self.phase = Phase.WAITING
            self._deadline = self._now + self.timings.failure_timeout

    def _on_probe(self, msg: Probe) -> None:
        self._send(msg.sender, self._answer_probe(msg))

    def _answer_probe(self, msg: Probe) -> ProbeReply:
        refuse = ProbeReply(self.term, self.id, msg.term, False)
        if msg.term <= self.term and self.voted_for not in (None, msg.sender):
            return refuse
        if msg.term < self.term:
            return refuse
        if self.phase is Phase.LEADING and self.id > msg.sender:
            return ProbeReply(self.term, self.id, msg.term, False, self.id)
        higher = max((p for p in self.live if p > msg.sender), default=None)
        if higher is not None:
            since = self._refusing_since.setdefault(msg.sender, self._now)
            if self._now - since <= self.timings.failure_timeout:
                return ProbeReply(self.term, self.id, msg.term, False, higher)
        self._refusing_since.pop(msg.sender, None)
        return ProbeReply(self.term, self.id, msg.term, True)

    def _on_probe_reply(self, msg: ProbeReply) -> None:
        if msg.term > self.term and not msg.granted:
            self._adopt_term(msg.term)
            return
        if self.phase is not Phase.PROBING or msg.probe_term != self.term + 1:
            return
        if msg.granted:
            self._refused.discard(msg.sender)
            self._quorum.grant(msg.sender)
            if self._quorum.won():
                self._claim()
        elif msg.higher is not None and msg.higher in self.live:
            self._send_election([msg.higher])
        else:
            self._refused.add(msg.sender)
            if len(self.peers) - len(self._refused) < self.majority:
                # lost for now, most likely because views lag (the refusers still see the
                # old leader); a probe changes nothing, so try again soon
                self.phase = Phase.IDLE
                jitter = self.rng.uniform(0.5, 1.0)
                self._not_before = self._now + self.timings.heartbeat_interval * jitter

    def _on_coordinator(self, msg: Coordinator) -> None:
        if msg.term < self.term:
            self._send(msg.sender, CoordinatorAck(self.term, self.id, False, self.log))
            return
        if msg.term > self.term:
            self._adopt_term(msg.term)
        granted = self.voted_for in (None, msg.sender)
        if granted and self.voted_for is None:
            self.voted_for = msg.sender
            self._dirty = True
            self._not_before = self._now + self.timings.failure_timeout
        self._send(msg.sender, CoordinatorAck(self.term, self.id, granted, self.log))

    def _on_coordinator_ack(self, msg: CoordinatorAck) -> None:
        if msg.term > self.term:
            self._adopt_term(msg.term)
            return
        if self.phase is not Phase.CLAIMING or msg.term != self.term or not msg.granted:
            return
        self._quorum.grant(msg.sender)
        if msg.log.key() > self.best_log[1].key():
            self.best_log = (msg.sender, msg.log)
        if self._quorum.won():
            self._become_leader()

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        ok = self.leader_contact(self._now, msg.term, msg.sender)
        self._send(msg.sender, HeartbeatAck(self.term, self.id, ok))

    def _on_heartbeat_ack(self, msg: HeartbeatAck) -> None:
        self.leader_ack(self._now, msg.term, msg.sender, msg.ok)

    # ------------------------------------------ leader contact from replication

    def leader_contact(self, now: float, term: int, leader: int) -> bool:
        """A message from the leader of `term` (a heartbeat or an append).

        Returns False when `term` is stale (the caller refuses with `self.term`).
        """
        self._now = now
        if term < self.term or leader not in self.others:
            return False
        if term > self.term:
            self._adopt_term(term)
        if self.voted_for is None:
            self.voted_for = leader
            self._dirty = True
        if self.leader != leader:
            self._emit(f"peer {self.id} follows {leader}, term {term}")
            self.caught_up = False
        self.phase = Phase.IDLE
        self.leader = leader
        self._lost_leader = None
        self._leader_contact = now
        self._refusing_since.clear()
        return True

    def leader_ack(self, now: float, term: int, sender: int, ok: bool) -> None:
        """A follower's answer to this leader's heartbeat or append."""
        self._now = now
        if term > self.term:
            self._adopt_term(term)
        elif self.phase is Phase.LEADING and term == self.term and ok:
            self._heard[sender] = now

    def observe_term(self, now: float, term: int) -> None:
        """Any peer message carrying a newer term: adopt it and step down."""
        self._now = now
        if term > self.term:
            self._adopt_term(term)

    # ------------------------------------------------------------------ helpers

    def _adopt_term(self, term: int) -> None:
        if self.phase is Phase.LEADING:
            self._emit(f"peer {self.id} steps down: term {term} is newer")
        self._step_down(term)

    def _step_down(self, term: int) -> None:
        if term > self.term:
            self.term = term
            self.voted_for = None
            self._dirty = True
        self.phase = Phase.IDLE
        self.leader = None
        self._not_before = self._now + self.timings.election_timeout * self.rng.uniform(0.5, 1.5)

    def _send(self, to: int, message: Message) -> None:
        self._out.messages.append(Envelope(to, message))

    def _emit(self, event: str) -> None:
        self._out.events.append(event)
