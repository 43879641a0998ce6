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

Amnesia. A peer whose stored state was wiped restarts with term 0 and no vote: it cannot
know whom it acked in the current term, so acking again could give that term two leaders.
Started `amnesiac`, it grants no `Probe`, acks no `Coordinator` (it still adopts a higher
term and answers) and starts no election, until it hears a leader of its current term
(`leader_contact`, which records that leader as its vote), or until `failure_timeout` has
passed since the first `now` it saw with no leader heard. By then any claim it may have
acked before the wipe has run out (a claim lasts `election_timeout` < `failure_timeout`),
and a brand-new cluster, where every peer starts empty, still elects a leader.

Membership. The voters elect and count; other members (learners, joining the cluster)
get heartbeats and follow, never campaign and are never counted. `set_members` moves the
sets as the configuration changes (Raft's single-server changes, decided by the log:
`peer.protocol.configuration`). A leader is followed whoever it is, as long as its term
is current: a peer whose configuration lags must still hear the leader it lacks. An ack
names the acker's configuration (`set_members`' version and voters), and a claimant
leads only with a majority of the newest one named as well as of its own: a peer that
missed changes does not lead a term a leader of the newer configuration may hold.

Inputs: `tick(now, live)` with the membership view, `step(now, message)`, `set_log(...)`.
`step` checks a message's term once, before its handler sees it (`_check_term`): the
handlers only ever see messages of the current term (replies: of the current probe).
Outputs: `ready()` returns a `Ready` (state to persist, messages, events); the driver
persists, then sends. No I/O, no clock reads, randomness from the `random.Random` given.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum, auto

from election.events import (
    AmnesiaEnded,
    BecameLeader,
    ElectionEvent,
    ElectionStarted,
    Following,
    LeaderLost,
    LostMajority,
    Resigned,
    SteppedDown,
)
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
    """The election's clocks, in seconds (their defaults are the cluster's settings)."""

    heartbeat_interval: float
    election_timeout: float
    failure_timeout: float


class BullyElection:
    """One peer's view of the election. See the module docstring."""

    def __init__(
        self,
        node_id: int,
        peers: Iterable[int],
        timings: Timings,
        rng: random.Random,
        hard_state: HardState | None = None,
        amnesiac: bool = False,
    ) -> None:
        self.id = node_id
        self.peers: tuple[int, ...] = ()  # the voters, by id
        self.voters: frozenset[int] = frozenset()
        self.config_version = 0  # of the configuration in force (`set_members`)
        self._newer: tuple[int, frozenset[int]] | None = None  # newest config an ack named
        self.others: tuple[int, ...] = ()  # every other member, voter or not
        self._voting_others: tuple[int, ...] = ()
        self.timings = timings
        self.rng = rng
        state = hard_state or HardState()
        self.term = state.term
        self.voted_for = state.voted_for
        self._tick_of_phase: dict[Phase, Callable[[], None]] = {
            Phase.IDLE: self._tick_follower,
            Phase.WAITING: self._tick_candidate,
            Phase.ELECTING: self._tick_candidate,
            Phase.PROBING: self._tick_candidate,
            Phase.CLAIMING: self._tick_candidate,
            Phase.LEADING: self._tick_leader,
        }
        self._phase: Phase
        self.role: Role
        self._tick_phase: Callable[[], None]
        self.phase = Phase.IDLE  # sets the three above
        self._amnesiac = amnesiac  # see "Amnesia" in the module docstring
        self._started: float | None = None  # the first `now` seen
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
        self._quorum = Quorum(())
        self._heard: dict[int, float] = {}  # leader: last HeartbeatAck per peer
        self.set_members(set(peers) | {node_id}, ())
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
        self._tick_phase = self._tick_of_phase[phase]  # what `tick` runs in this phase

    @property
    def amnesiac(self) -> bool:
        """Whether this peer, started without stored state, still withholds its vote
        (see "Amnesia" in the module docstring)."""
        return self._amnesiac

    @property
    def majority(self) -> int:
        return self._quorum.size

    @property
    def is_voter(self) -> bool:
        return self.id in self.voters

    def claim_holds(self, voters: Iterable[int]) -> bool:
        """Whether this peer's acks for the term it leads are a majority of `voters`,
        itself among them (a leader whose log sync brought a newer configuration checks
        it still holds under that one)."""
        voting = frozenset(voters)
        acked = self._quorum.granted & voting
        return self.id in voting and len(acked) >= len(voting) // 2 + 1

    def hard_state(self) -> HardState:
        return HardState(self.term, self.voted_for)

    # ------------------------------------------------------------------ inputs

    def set_members(self, voters: Iterable[int], learners: Iterable[int], version: int = 0) -> None:
        """The configuration in force: who votes, and who else is a member; `version`
        orders configurations (the log index of the change that made it; 0: the first)."""
        self.config_version = version
        self.voters = frozenset(voters)
        self.peers = tuple(sorted(self.voters))
        members = self.voters | frozenset(learners)
        self.others = tuple(sorted(members - {self.id}))
        self._voting_others = tuple(p for p in self.peers if p != self.id)
        self._quorum.set_peers(self.voters)
        self.live &= self.voters | {self.id}
        self._heard = {p: at for p, at in self._heard.items() if p in self.voters}

    def set_log(self, log: LogPosition, caught_up: bool) -> None:
        """The driver reports the local log's end and whether it matches the leader's."""
        self.log = log
        self.caught_up = caught_up

    def tick(self, now: float, live: Iterable[int]) -> None:
        """Advance timers; `live` is every peer the membership view does not hold dead."""
        self._advance(now)
        self.live = ((frozenset(live) & self.voters) | {self.id}) - {self._lost_leader}
        for cand, since in list(self._refusing_since.items()):
            if now - since > 4 * self.timings.failure_timeout:
                del self._refusing_since[cand]  # an old refusal streak has ended
        self._tick_phase()  # the phase's own timers (set with the phase)

    def step(self, now: float, message: Message) -> None:
        """Handle one message from a peer. Unknown senders are ignored, and campaigns of
        a member that does not vote; the term is checked once, here, and only a current
        message reaches its handler."""
        self._advance(now)
        if message.sender not in self.others:
            return
        campaign = isinstance(message, Election | Probe | Coordinator)
        if campaign and message.sender not in self.voters:
            return
        if self._check_term(message):
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
        self._emit(LeaderLost(self.id, self.leader, self.term))
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
        return len(self.live & self.voters) >= self.majority

    # ----------------------------------------------------------- role: candidate

    def _start_election(self) -> None:
        """The only way into an election (every probe and claim follows from here)."""
        if self._amnesiac or not self.is_voter or not self._sees_majority():
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
        self._emit(ElectionStarted(self.id, self.term + 1))
        probe = Probe(self.term + 1, self.id, self.log)
        for peer in self._voting_others:
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
        self._newer = None
        self.best_log = (self.id, self.log)
        self._deadline = self._now + self.timings.election_timeout
        claim = Coordinator(self.term, self.id, self.log)
        for peer in self._voting_others:
            self._send(peer, claim)
        if self._claim_won():
            self._become_leader()

    def _claim_won(self) -> bool:
        """A majority acked, of this peer's configuration and of the newest one an ack
        named: a peer that missed membership changes is no leader of a majority it no
        longer has (a leader of the newer configuration may hold this very term)."""
        if not self._quorum.won():
            return False
        return self._newer is None or self.claim_holds(self._newer[1])

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
        self._emit(BecameLeader(self.id, self.term))
        self._broadcast_heartbeat()

    def _tick_leader(self) -> None:
        horizon = self._now - self.timings.failure_timeout
        recent = {peer for peer, at in self._heard.items() if at >= horizon}
        # (a leader being removed leads on, not counting itself, until that commits)
        if len((recent | {self.id}) & self.voters) < self.majority:
            self._emit(LostMajority(self.id, self.term))
            self._step_down(self.term)
            return
        if self._now >= self._next_heartbeat:
            self._broadcast_heartbeat()

    def _broadcast_heartbeat(self) -> None:
        self._next_heartbeat = self._now + self.timings.heartbeat_interval
        beat = Heartbeat(self.term, self.id)
        for peer in self.others:
            self._send(peer, beat)

    # ------------------------------------------------------------------- terms

    def _check_term(self, msg: Message) -> bool:
        """The term rule, for every message, before dispatch (as etcd's raft does it).

        `Election`, `Alive` and `Probe` never change a term and always go through (a
        probe is answered on its own rules). A `ProbeReply` refusing with a higher term
        is authoritative; any reply goes through only when it answers the current probe.
        `Coordinator`, `CoordinatorAck`, `Heartbeat` and `HeartbeatAck` are authoritative:
        a higher term is adopted (stepping down) before the handler runs; a lower one is
        refused with the current term (a claim or heartbeat) or dropped (an ack).
        Returns whether the handler should see `msg`."""
        if isinstance(msg, Election | Alive | Probe):
            return True
        if isinstance(msg, ProbeReply):
            if not msg.granted and msg.term > self.term:
                self._adopt_term(msg.term)
            return msg.probe_term == self.term + 1
        if self._settle_term(msg.term):
            return True
        if isinstance(msg, Coordinator):  # fencing: the stale claimant learns the term
            self._send(msg.sender, CoordinatorAck(self.term, self.id, False, self.log))
        elif isinstance(msg, Heartbeat):  # fencing: the stale leader learns it is deposed
            self._send(msg.sender, HeartbeatAck(self.term, self.id, False))
        return False

    def _settle_term(self, term: int) -> bool:
        """For an authoritative `term`: adopt it if newer; whether it is now current."""
        if term > self.term:
            self._adopt_term(term)
        return term == self.term

    # ----------------------------------------------------------------- handlers
    # Each sees only messages `_check_term` let through: of the current term.

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
        if self._amnesiac:  # it may have acked someone else in that term before a wipe
            return refuse
        if msg.term <= self.term and self.voted_for is not None:
            # a vote in that term stands, for whoever it was: a claimant never probes a
            # term it has claimed before unless it forgot it (a wiped disk), and granting
            # it again would let it lead a term it led before, with another log
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
        if self.phase is not Phase.PROBING:
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
        granted = not self._amnesiac and self.voted_for in (None, msg.sender)
        if granted and self.voted_for is None:
            self.voted_for = msg.sender
            self._dirty = True
            self._not_before = self._now + self.timings.failure_timeout
        voters = self.peers if self.config_version else ()
        ack = CoordinatorAck(self.term, self.id, granted, self.log, self.config_version, voters)
        self._send(msg.sender, ack)

    def _on_coordinator_ack(self, msg: CoordinatorAck) -> None:
        if self.phase is not Phase.CLAIMING or not msg.granted or msg.sender not in self.voters:
            return  # (a member that does not vote is neither counted nor synced from)
        self._quorum.grant(msg.sender)
        if msg.log.key() > self.best_log[1].key():
            self.best_log = (msg.sender, msg.log)
        newest = self.config_version if self._newer is None else self._newer[0]
        if msg.config > newest:
            self._newer = (msg.config, frozenset(msg.voters))
        if self._claim_won():
            self._become_leader()

    def _on_heartbeat(self, msg: Heartbeat) -> None:
        self._follow(msg.sender)
        self._send(msg.sender, HeartbeatAck(self.term, self.id, True))

    def _on_heartbeat_ack(self, msg: HeartbeatAck) -> None:
        self._heard_from(msg.sender, msg.ok)

    def _follow(self, leader: int) -> None:
        """The leader of the current term was heard."""
        if self.voted_for is None:
            self.voted_for = leader
            self._dirty = True
        if self.leader != leader:
            self._emit(Following(self.id, leader, self.term))
            self.caught_up = False
        self._amnesiac = False  # its vote is now the leader's, persisted like any vote
        self.phase = Phase.IDLE
        self.leader = leader
        self._lost_leader = None
        self._leader_contact = self._now
        self._refusing_since.clear()

    def _heard_from(self, peer: int, ok: bool) -> None:
        """A follower answered this peer's heartbeat or append of the current term."""
        if self.phase is Phase.LEADING and ok and peer in self.voters:
            self._heard[peer] = self._now

    # ------------------------------------------ leader contact from replication
    # Replication messages do not pass through `step`: these apply the same term rule
    # as `_check_term` to them (an `Append` or `FetchLog`, and an `AppendReply`).

    def leader_contact(self, now: float, term: int, leader: int) -> bool:
        """A message from the leader of `term` (a heartbeat or an append).

        Returns False when `term` is stale (the caller refuses with `self.term`).
        """
        self._advance(now)
        if leader == self.id or not self._settle_term(term):
            return False
        self._follow(leader)
        return True

    def leader_ack(self, now: float, term: int, sender: int, ok: bool) -> None:
        """A follower's answer to this leader's heartbeat or append."""
        self._advance(now)
        if self._settle_term(term):
            self._heard_from(sender, ok)

    def resign(self) -> None:
        """Give up leading this term (the log it was to serve from is gone); a new
        election, in a higher term, follows after the usual backoff."""
        if self.phase is Phase.LEADING:
            self._emit(Resigned(self.id, self.term))
            self._step_down(self.term)

    def observe_term(self, now: float, term: int) -> None:
        """Any peer message carrying a newer term: adopt it and step down."""
        self._advance(now)
        if term > self.term:
            self._adopt_term(term)

    # ------------------------------------------------------------------ helpers

    def _advance(self, now: float) -> None:
        """Every input's `now`: the clock, and the end of amnesia by time."""
        self._now = now
        if self._started is None:
            self._started = now
        if self._amnesiac and now - self._started > self.timings.failure_timeout:
            self._amnesiac = False  # no leader heard since the start: vote again
            self._emit(AmnesiaEnded(self.id))

    def _adopt_term(self, term: int) -> None:
        if self.phase is Phase.LEADING:
            self._emit(SteppedDown(self.id, term))
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

    def _emit(self, event: ElectionEvent) -> None:
        self._out.events.append(event)
