"""Ring 1: the bully election (`election.bully.BullyElection`), driven directly.

Each test feeds one machine plain messages with `step(now, msg)` and timer ticks with
`tick(now, live)`, then reads its output with `ready()`. No sleeps, no I/O, a seeded
`random.Random`. Each test is named after the rule it checks (see the module docstring of
`election.bully` and DESIGN.md, "Election: bully, made safe").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TypeVar

import pytest

from election import (
    Alive,
    BullyElection,
    Coordinator,
    CoordinatorAck,
    Election,
    Envelope,
    HardState,
    Heartbeat,
    HeartbeatAck,
    LogPosition,
    Message,
    Phase,
    Probe,
    ProbeReply,
    Ready,
    Role,
    Timings,
)
from election.events import SteppedDown

PEERS = (1, 2, 3, 4, 5)
TIMINGS = Timings(heartbeat_interval=0.1, election_timeout=0.2, failure_timeout=0.5)
M = TypeVar("M")


# ------------------------------------------------------------------ helpers


def make(
    node_id: int,
    peers: tuple[int, ...] = PEERS,
    seed: int = 0,
    hard_state: HardState | None = None,
    amnesiac: bool = False,
) -> BullyElection:
    return BullyElection(node_id, peers, TIMINGS, random.Random(seed), hard_state, amnesiac)


def feed(machine: BullyElection, now: float, *messages: Message) -> Ready:
    """Step every message at `now`, then return the batch they produced."""
    for message in messages:
        machine.step(now, message)
    return machine.ready()


def tick(machine: BullyElection, now: float, live: tuple[int, ...] = PEERS) -> Ready:
    machine.tick(now, live)
    return machine.ready()


def sent(ready: Ready, kind: type[M]) -> list[tuple[int, M]]:
    """(recipient, message) for every message of `kind` in the batch."""
    return [(e.to, e.message) for e in ready.messages if isinstance(e.message, kind)]


def messages(ready: Ready, kind: type[M]) -> list[M]:
    return [message for _, message in sent(ready, kind)]


def recipients(ready: Ready, kind: type[M]) -> set[int]:
    return {to for to, _ in sent(ready, kind)}


def grants(probe_term: int, *senders: int, term: int = 0) -> list[ProbeReply]:
    return [ProbeReply(term, s, probe_term, True) for s in senders]


def acks(term: int, *senders: int, log: LogPosition | None = None) -> list[CoordinatorAck]:
    return [CoordinatorAck(term, s, True, log or LogPosition()) for s in senders]


def elect(machine: BullyElection, now: float = 0.0, voters: tuple[int, ...] = ()) -> Ready:
    """Make the highest live peer `machine` leader: probe, claim, and collect acks."""
    tick(machine, now)
    voters = voters or tuple(p for p in machine.others[: machine.majority - 1])
    claim = feed(machine, now, *grants(machine.term + 1, *voters))
    assert messages(claim, Coordinator), "elect(): the probe was not won"
    out = feed(machine, now, *acks(machine.term, *voters))
    assert machine.role is Role.LEADER
    return out


def follower_of(node_id: int, leader: int, term: int = 1, now: float = 0.0) -> BullyElection:
    """A peer that has acked and follows `leader` in `term`."""
    machine = make(node_id)
    feed(machine, now, Coordinator(term, leader, LogPosition()), Heartbeat(term, leader))
    assert machine.leader == leader
    return machine


# ------------------------------------------------------------------ starting an election


def test_peer_seeing_no_higher_live_id_probes_at_once() -> None:
    machine = make(3)
    out = tick(machine, 0.0, live=(1, 2, 3))
    assert recipients(out, Probe) == {1, 2, 4, 5}
    assert {p.term for p in messages(out, Probe)} == {1}
    assert messages(out, Election) == []
    assert machine.role is Role.CANDIDATE


def test_peer_seeing_a_higher_live_id_sends_election_to_higher_ids_only() -> None:
    machine = make(3)
    out = tick(machine, 0.0)
    assert recipients(out, Election) == {4, 5}
    assert messages(out, Probe) == []


def test_no_answer_within_election_timeout_claims_leadership() -> None:
    machine = make(3)
    tick(machine, 0.0)
    assert messages(tick(machine, 0.19), Probe) == []  # still waiting for Alive
    out = tick(machine, 0.2)
    assert recipients(out, Probe) == {1, 2, 4, 5}
    claim = feed(machine, 0.21, *grants(1, 1, 2))
    assert recipients(claim, Coordinator) == {1, 2, 4, 5}
    assert {c.term for c in messages(claim, Coordinator)} == {1}


def test_alive_from_higher_peer_stops_the_claim() -> None:
    machine = make(3)
    tick(machine, 0.0)
    feed(machine, 0.05, Alive(0, 5))
    out = tick(machine, 0.25)
    assert messages(out, Probe) == []
    assert machine.phase is Phase.WAITING


def test_peer_that_cannot_see_majority_never_starts_election() -> None:
    for node_id, live in ((5, (4, 5)), (3, (3,)), (1, (1, 2))):
        machine = make(node_id)
        for step in range(100):
            out = tick(machine, step * 0.05, live=live)
            assert out.messages == [], (node_id, step)
        assert machine.role is Role.FOLLOWER
        assert machine.term == 0


def test_probe_is_not_won_without_a_majority_of_grants() -> None:
    machine = make(5)
    tick(machine, 0.0)
    out = feed(machine, 0.01, *grants(1, 4))
    assert messages(out, Coordinator) == []
    assert machine.term == 0


def test_unanswered_probe_backs_off_and_retries() -> None:
    machine = make(5)
    tick(machine, 0.0)
    tick(machine, 0.2)  # the probe times out
    assert machine.phase is Phase.IDLE
    retried = [tick(machine, 0.2 + step * 0.01) for step in range(1, 40)]
    assert any(messages(out, Probe) for out in retried)
    assert machine.term == 0  # a failed probe raises no term


# ------------------------------------------------------------------ claiming and acks


def test_claimant_leads_only_with_majority_of_acks() -> None:
    machine = make(5)
    tick(machine, 0.0)
    feed(machine, 0.01, *grants(1, 4, 3))
    assert machine.role is Role.CANDIDATE
    feed(machine, 0.02, *acks(1, 4))
    assert machine.role is Role.CANDIDATE  # 2 of 5
    feed(machine, 0.02, CoordinatorAck(1, 3, False))
    assert machine.role is Role.CANDIDATE  # a refusal is not an ack
    out = feed(machine, 0.03, *acks(1, 3))
    assert machine.role is Role.LEADER  # 3 of 5, itself included
    assert machine.leader == 5
    assert recipients(out, Heartbeat) == {1, 2, 3, 4}


def test_claimant_that_gets_no_majority_of_acks_gives_up() -> None:
    machine = make(5)
    tick(machine, 0.0)
    feed(machine, 0.01, *grants(1, 4, 3))
    feed(machine, 0.02, *acks(1, 4))
    tick(machine, 0.25)
    assert machine.role is Role.FOLLOWER
    assert machine.leader is None


def test_claim_is_persisted_with_own_vote_before_coordinator_is_sent() -> None:
    machine = make(5)
    tick(machine, 0.0)
    out = feed(machine, 0.01, *grants(1, 4, 3))
    assert messages(out, Coordinator)
    assert out.hard_state == HardState(term=1, voted_for=5)


def test_peer_acks_at_most_one_claimant_per_term() -> None:
    machine = make(2)
    first = feed(machine, 0.0, Coordinator(1, 4, LogPosition()))
    assert [a.granted for a in messages(first, CoordinatorAck)] == [True]
    second = feed(machine, 0.01, Coordinator(1, 5, LogPosition()))
    assert sent(second, CoordinatorAck) == [(5, CoordinatorAck(1, 2, False, LogPosition()))]
    again = feed(machine, 0.02, Coordinator(1, 4, LogPosition()))
    assert [a.granted for a in messages(again, CoordinatorAck)] == [True]  # idempotent
    assert machine.voted_for == 4


def test_peer_acks_a_new_claimant_in_a_higher_term() -> None:
    machine = make(2)
    feed(machine, 0.0, Coordinator(1, 4, LogPosition()))
    out = feed(machine, 0.01, Coordinator(2, 5, LogPosition()))
    assert [a.granted for a in messages(out, CoordinatorAck)] == [True]
    assert out.hard_state == HardState(term=2, voted_for=5)


def test_restarted_peer_keeps_its_persisted_vote() -> None:
    machine = make(2, hard_state=HardState(term=3, voted_for=4))
    out = feed(machine, 0.0, Coordinator(3, 5, LogPosition()))
    assert [a.granted for a in messages(out, CoordinatorAck)] == [False]


def test_claimant_refuses_other_claims_in_its_own_term() -> None:
    machine = make(4)
    tick(machine, 0.0, live=(1, 2, 3, 4))
    feed(machine, 0.01, *grants(1, 3, 2))
    out = feed(machine, 0.02, Coordinator(1, 5, LogPosition()))
    assert [a.granted for a in messages(out, CoordinatorAck)] == [False]


@pytest.mark.parametrize("start_term", [4, 0], ids=["same-term", "newer-term"])
def test_ack_is_persisted_before_it_is_sent(start_term: int) -> None:
    machine = make(2, hard_state=HardState(term=start_term))
    out = feed(machine, 0.0, Coordinator(4, 5, LogPosition()))
    assert [a.granted for a in messages(out, CoordinatorAck)] == [True]
    assert out.hard_state == HardState(term=4, voted_for=5)


def test_ack_carries_log_position() -> None:
    machine = make(2)
    machine.set_log(LogPosition(term=2, index=7), caught_up=False)
    out = feed(machine, 0.0, Coordinator(3, 5, LogPosition()))
    assert messages(out, CoordinatorAck) == [CoordinatorAck(3, 2, True, LogPosition(2, 7))]


def test_probe_and_claim_carry_the_claimants_log_position() -> None:
    machine = make(5)
    machine.set_log(LogPosition(term=1, index=9), caught_up=True)
    out = tick(machine, 0.0)
    assert {p.log for p in messages(out, Probe)} == {LogPosition(1, 9)}
    claim = feed(machine, 0.01, *grants(1, 4, 3))
    assert {c.log for c in messages(claim, Coordinator)} == {LogPosition(1, 9)}


@pytest.mark.parametrize(
    ("own", "ack_3", "ack_4", "best"),
    [
        # a higher term beats a longer log
        (LogPosition(1, 10), LogPosition(1, 20), LogPosition(2, 3), (4, LogPosition(2, 3))),
        # same term: the higher index wins, whichever ack comes first
        (LogPosition(1, 10), LogPosition(2, 8), LogPosition(2, 5), (3, LogPosition(2, 8))),
        # the claimant's own log counts too
        (LogPosition(3, 1), LogPosition(2, 50), LogPosition(2, 60), (5, LogPosition(3, 1))),
    ],
)
def test_leader_best_log_is_the_most_up_to_date_among_acks(
    own: LogPosition, ack_3: LogPosition, ack_4: LogPosition, best: tuple[int, LogPosition]
) -> None:
    machine = make(5)
    machine.set_log(own, caught_up=True)
    tick(machine, 0.0)
    feed(machine, 0.01, *grants(1, 3, 4))
    feed(machine, 0.02, *acks(1, 3, log=ack_3), *acks(1, 4, log=ack_4))
    assert machine.role is Role.LEADER
    assert machine.best_log == best


# ------------------------------------------------------------------ terms and fencing


def test_stale_term_coordinator_is_refused_with_current_term() -> None:
    machine = make(2, hard_state=HardState(term=3, voted_for=None))
    out = feed(machine, 0.0, Coordinator(2, 5, LogPosition()))
    assert sent(out, CoordinatorAck) == [(5, CoordinatorAck(3, 2, False, LogPosition()))]
    assert out.hard_state is None
    assert machine.voted_for is None


def test_stale_term_heartbeat_is_refused_with_current_term() -> None:
    machine = follower_of(2, leader=4, term=3)
    out = feed(machine, 0.0, Heartbeat(2, 5))
    assert sent(out, HeartbeatAck) == [(5, HeartbeatAck(3, 2, False))]
    assert machine.leader == 4


def test_claimant_refused_with_a_higher_term_adopts_it_and_stands_down() -> None:
    machine = make(5)
    tick(machine, 0.0)
    feed(machine, 0.01, *grants(1, 4, 3))
    out = feed(machine, 0.02, CoordinatorAck(7, 4, False))
    assert machine.term == 7
    assert machine.role is Role.FOLLOWER
    assert out.hard_state == HardState(term=7, voted_for=None)


def test_higher_term_heartbeat_makes_leader_step_down() -> None:
    machine = make(5)
    elect(machine)
    out = feed(machine, 0.1, Heartbeat(2, 4))
    assert machine.role is Role.FOLLOWER
    assert machine.term == 2
    assert machine.leader == 4
    assert out.hard_state is not None and out.hard_state.term == 2
    assert sent(out, HeartbeatAck) == [(4, HeartbeatAck(2, 5, True))]


def test_higher_term_coordinator_makes_leader_step_down() -> None:
    machine = make(5)
    elect(machine)
    feed(machine, 0.1, Coordinator(2, 3, LogPosition()))
    assert machine.role is Role.FOLLOWER
    assert machine.term == 2


def test_deposed_leader_learns_it_is_deposed_from_a_heartbeat_refusal() -> None:
    machine = make(5)
    elect(machine)
    feed(machine, 0.1, HeartbeatAck(4, 2, False))
    assert machine.role is Role.FOLLOWER
    assert machine.term == 4


def _idle_at_term_3() -> BullyElection:
    """2 in term 3, no vote, no leader: it would ack a claimant or follow a leader."""
    return make(2, hard_state=HardState(term=3))


def _claimant_of_term_3() -> BullyElection:
    """5 claims term 3 with 4's ack: one more ack and it leads."""
    machine = make(5, hard_state=HardState(term=2))
    tick(machine, 0.0)
    feed(machine, 0.0, *grants(3, 4, 3, term=2))
    feed(machine, 0.0, *acks(3, 4))
    assert machine.phase is Phase.CLAIMING
    return machine


def _leader_of_term_3() -> BullyElection:
    """5 leads term 3; only 4 answered since: one more answer and it keeps its majority."""
    machine = make(5, hard_state=HardState(term=2))
    elect(machine, 0.0, voters=(3, 4))
    feed(machine, 0.25, HeartbeatAck(3, 4, True))
    return machine


def _prober_for_term_4() -> BullyElection:
    """5 in term 3 probes term 4 with 4's grant: one more grant and it claims."""
    machine = make(5, hard_state=HardState(term=3))
    tick(machine, 0.0)
    feed(machine, 0.0, *grants(4, 4, term=3))
    assert machine.phase is Phase.PROBING
    return machine


@pytest.mark.parametrize(
    ("setup", "stale", "refusal"),
    [
        (_idle_at_term_3, Coordinator(2, 5, LogPosition()), CoordinatorAck(3, 2, False)),
        (_idle_at_term_3, Heartbeat(2, 5), HeartbeatAck(3, 2, False)),
        (_claimant_of_term_3, CoordinatorAck(2, 3, True), None),
        (_leader_of_term_3, HeartbeatAck(2, 3, True), None),
        (_prober_for_term_4, ProbeReply(3, 3, 3, True), None),  # answers an older probe
    ],
    ids=["coordinator", "heartbeat", "coordinator-ack", "heartbeat-ack", "probe-reply"],
)
def test_a_stale_term_is_refused_in_one_place_for_every_message_kind(
    setup: Callable[[], BullyElection], stale: Message, refusal: Message | None
) -> None:
    machine, twin = setup(), setup()
    out = feed(machine, 0.3, stale)
    # a stale claim or heartbeat is fenced with the current term; a stale answer dropped
    assert out.messages == ([] if refusal is None else [Envelope(stale.sender, refusal)])
    assert out.hard_state is None and out.events == []
    # and it changed nothing: the peer goes on exactly like a twin that never got it
    for now in (0.3, 0.45, 0.6):
        assert tick(machine, now) == tick(twin, now)
        state = (machine.term, machine.voted_for, machine.phase, machine.leader)
        assert state == (twin.term, twin.voted_for, twin.phase, twin.leader)


AUTHORITATIVE: list[Message] = [
    Coordinator(7, 3, LogPosition()),
    CoordinatorAck(7, 3, False),
    Heartbeat(7, 3),
    HeartbeatAck(7, 3, False),
    ProbeReply(7, 3, 4, False),  # a refusal
]
NOT_AUTHORITATIVE: list[Message] = [
    Election(7, 3),
    Alive(7, 4),
    Probe(7, 3, LogPosition()),
    ProbeReply(7, 3, 4, True),  # a grant
]


@pytest.mark.parametrize("message", AUTHORITATIVE, ids=lambda m: type(m).__name__)
def test_a_higher_term_of_an_authoritative_kind_is_adopted_and_the_peer_steps_down(
    message: Message,
) -> None:
    machine = _leader_of_term_3()
    out = feed(machine, 0.3, message)
    assert machine.term == 7
    assert machine.role is Role.FOLLOWER and machine.leader != 5
    assert out.hard_state is not None and out.hard_state.term == 7
    assert SteppedDown(5, 7) in out.events
    assert str(SteppedDown(5, 7)) == "peer 5 steps down: term 7 is newer"


@pytest.mark.parametrize("message", NOT_AUTHORITATIVE, ids=lambda m: type(m).__name__)
def test_election_alive_probe_and_grants_never_change_a_term(message: Message) -> None:
    machine = _leader_of_term_3()
    out = feed(machine, 0.3, message)
    assert machine.term == 3
    assert machine.role is Role.LEADER
    assert out.hard_state is None


def test_peer_follows_the_leader_whose_heartbeat_it_hears() -> None:
    machine = follower_of(2, leader=5)
    out = feed(machine, 0.1, Heartbeat(1, 5))
    assert machine.role is Role.FOLLOWER
    assert machine.leader == 5
    assert sent(out, HeartbeatAck) == [(5, HeartbeatAck(1, 2, True))]


def test_follower_with_a_live_leader_starts_no_election() -> None:
    machine = follower_of(2, leader=5)
    for step in range(1, 20):
        now = step * 0.1
        feed(machine, now, Heartbeat(1, 5))
        out = tick(machine, now)
        assert messages(out, Election) == [] and messages(out, Probe) == []
    assert machine.leader == 5


def test_follower_whose_leader_goes_silent_starts_an_election() -> None:
    machine = follower_of(3, leader=5)
    assert messages(tick(machine, 0.4), Election) == []
    out = tick(machine, 0.6, live=(1, 2, 3, 4))
    assert machine.leader is None
    assert recipients(out, Election) == {4}


# ------------------------------------------------------------------ probes and stickiness


def test_probe_changes_no_state() -> None:
    machine = follower_of(2, leader=4, term=3)
    tick(machine, 0.1)
    before = (machine.term, machine.voted_for, machine.phase, machine.leader, machine.role)
    for probe in (
        Probe(4, 5, LogPosition()),
        Probe(9, 1, LogPosition()),
        Probe(2, 3, LogPosition()),
    ):
        out = feed(machine, 0.2, probe)
        assert out.hard_state is None
        assert len(messages(out, ProbeReply)) == 1
        assert (
            machine.term,
            machine.voted_for,
            machine.phase,
            machine.leader,
            machine.role,
        ) == before


def test_probe_does_not_disturb_a_leader() -> None:
    machine = make(5)
    elect(machine)
    out = feed(machine, 0.1, Probe(9, 3, LogPosition()))
    assert machine.role is Role.LEADER
    assert machine.term == 1
    assert out.hard_state is None
    assert messages(out, ProbeReply) == [ProbeReply(1, 5, 9, False, 5)]


def test_probe_from_lower_id_is_refused_while_higher_peer_is_live() -> None:
    machine = make(2)
    tick(machine, 0.0, live=(1, 2, 3, 4))
    out = feed(machine, 0.01, Probe(1, 1, LogPosition()))
    assert sent(out, ProbeReply) == [(1, ProbeReply(0, 2, 1, False, 4))]


def test_probe_from_highest_live_id_is_granted() -> None:
    machine = make(2)
    tick(machine, 0.0, live=(1, 2, 3, 4))
    out = feed(machine, 0.01, Probe(1, 4, LogPosition()))
    assert sent(out, ProbeReply) == [(4, ProbeReply(0, 2, 1, True))]


def test_probe_for_a_term_already_voted_for_another_is_refused() -> None:
    machine = make(2, hard_state=HardState(term=3, voted_for=4))
    tick(machine, 0.0, live=(1, 2, 5))
    out = feed(machine, 0.01, Probe(3, 5, LogPosition()))
    assert [r.granted for r in messages(out, ProbeReply)] == [False]


def test_stickiness_ends_after_failure_timeout() -> None:
    machine = make(2)
    answers = []
    for now in (0.0, 0.25, 0.5, 0.51):
        machine.tick(now, PEERS)
        machine.ready()
        out = feed(machine, now, Probe(1, 1, LogPosition()))
        answers.append(messages(out, ProbeReply)[0])
    assert [a.granted for a in answers] == [False, False, False, True]
    assert {a.higher for a in answers[:3]} == {5}


def test_leader_heartbeat_renews_stickiness() -> None:
    machine = follower_of(2, leader=5)
    answers = []
    for step in range(10):
        now = step * 0.1
        feed(machine, now, Heartbeat(1, 5))
        machine.tick(now, PEERS)
        machine.ready()
        answers.append(messages(feed(machine, now, Probe(2, 1, LogPosition())), ProbeReply)[0])
    assert not any(a.granted for a in answers)


def test_refused_claimant_turns_to_the_named_higher_peer() -> None:
    machine = make(3)
    tick(machine, 0.0)
    tick(machine, 0.2)  # 4 and 5 did not answer: probe
    out = feed(machine, 0.21, ProbeReply(0, 1, 1, False, 5))
    assert sent(out, Election) == [(5, Election(0, 3))]
    assert machine.term == 0
    assert machine.phase is Phase.ELECTING


# ------------------------------------------------------------------ bully messages


def test_higher_peer_answers_election_with_alive() -> None:
    machine = make(4)
    out = feed(machine, 0.0, Election(0, 2))
    assert (2, Alive(0, 4)) in sent(out, Alive)


def test_election_from_a_higher_peer_gets_no_alive() -> None:
    machine = make(4)
    out = feed(machine, 0.0, Election(0, 5))
    assert messages(out, Alive) == []


def test_leader_answers_election_with_alive_and_a_heartbeat() -> None:
    machine = make(5)
    elect(machine)
    out = feed(machine, 0.1, Election(1, 2))
    assert sent(out, Alive) == [(2, Alive(1, 5))]
    assert sent(out, Heartbeat) == [(2, Heartbeat(1, 5))]


def test_higher_peer_without_leader_takes_over_on_election() -> None:
    machine = make(5)
    tick(machine, 0.0)  # probes at once
    tick(machine, 0.2)  # and backs off
    machine.tick(0.2, PEERS)
    out = feed(machine, 0.2, Election(0, 2))
    assert recipients(out, Probe) == {1, 2, 3, 4}


def test_messages_from_unknown_senders_are_ignored() -> None:
    machine = follower_of(2, leader=4, term=3)
    before = (machine.term, machine.voted_for, machine.phase, machine.leader)
    strangers: list[Message] = []
    for sender in (99, 0, 2):  # outside the cluster, and this peer itself
        strangers += [
            Election(3, sender),
            Alive(3, sender),
            Probe(9, sender, LogPosition()),
            ProbeReply(9, sender, 4, False),
            Coordinator(9, sender, LogPosition()),
            CoordinatorAck(9, sender, True),
            Heartbeat(9, sender),
            HeartbeatAck(9, sender, False),
        ]
    out = feed(machine, 0.1, *strangers)
    assert out.empty()
    assert (machine.term, machine.voted_for, machine.phase, machine.leader) == before


# ------------------------------------------------------------------ the leader


def test_leader_sends_heartbeats_every_interval() -> None:
    machine = make(5)
    elect(machine)
    beats = 0
    for step in range(1, 11):
        now = step * 0.05
        feed(machine, now, *(HeartbeatAck(1, p, True) for p in (3, 4)))
        beats += len(messages(tick(machine, now), Heartbeat))
    assert beats == 5 * 4  # one round per 0.1 s, to each of four peers


def test_leader_with_majority_contact_stays_leader() -> None:
    machine = make(5)
    elect(machine)
    for step in range(1, 30):
        now = step * 0.1
        feed(machine, now, HeartbeatAck(1, 3, True), HeartbeatAck(1, 4, True))
        tick(machine, now)
    assert machine.role is Role.LEADER


def test_leader_without_majority_contact_steps_down() -> None:
    machine = make(5)
    elect(machine)
    feed(machine, 0.3, HeartbeatAck(1, 3, True))  # one peer only: 2 of 5
    tick(machine, 0.5)
    assert machine.role is Role.LEADER
    out = tick(machine, 0.51)
    assert machine.role is Role.FOLLOWER
    assert machine.leader is None
    assert out.events  # the step-down is reported


def test_refused_heartbeat_ack_does_not_count_as_contact() -> None:
    machine = make(5)
    elect(machine)
    feed(machine, 0.4, HeartbeatAck(1, 3, False), HeartbeatAck(1, 4, False))
    tick(machine, 0.51)
    assert machine.role is Role.FOLLOWER


# ------------------------------------------------------------------ bully preemption


def test_returning_higher_id_preempts_lower_leader_once_caught_up() -> None:
    machine = follower_of(5, leader=3, term=1)
    machine.set_log(LogPosition(1, 4), caught_up=False)
    for step in range(1, 6):
        now = step * 0.05
        feed(machine, now, Heartbeat(1, 3))
        assert messages(tick(machine, now), Probe) == []  # not before caught up
    assert machine.leader == 3
    machine.set_log(LogPosition(1, 9), caught_up=True)
    out = tick(machine, 0.3)
    assert recipients(out, Probe) == {1, 2, 3, 4}
    assert {p.term for p in messages(out, Probe)} == {2}
    claim = feed(machine, 0.31, *grants(2, 3, 4, term=1))
    assert {c.term for c in messages(claim, Coordinator)} == {2}


def test_peer_does_not_preempt_a_lower_leader_without_a_majority_in_view() -> None:
    machine = follower_of(5, leader=3, term=1)
    machine.set_log(LogPosition(1, 9), caught_up=True)
    for step in range(1, 6):
        now = step * 0.05
        feed(machine, now, Heartbeat(1, 3))
        assert tick(machine, now, live=(3, 5)).messages == []


def test_peer_does_not_preempt_while_a_still_higher_peer_is_live() -> None:
    machine = follower_of(4, leader=3, term=1)
    machine.set_log(LogPosition(1, 9), caught_up=True)
    feed(machine, 0.05, Heartbeat(1, 3))
    out = tick(machine, 0.05)
    assert messages(out, Probe) == [] and messages(out, Election) == []


def test_a_new_leader_is_not_caught_up_until_the_driver_says_so() -> None:
    machine = follower_of(5, leader=3, term=1)
    machine.set_log(LogPosition(1, 9), caught_up=True)
    feed(machine, 0.0, Heartbeat(2, 2))  # a different leader, a newer term
    assert machine.caught_up is False


# ------------------------------------------------------------------ liveness


def test_higher_peer_that_answers_alive_but_never_leads_does_not_block_forever() -> None:
    machine = make(4)
    probed = False
    for step in range(200):  # 10 s of virtual time, 20 x failure_timeout
        now = step * 0.05
        out = tick(machine, now)
        probed = probed or bool(messages(out, Probe))
        for to, _ in sent(out, Election):
            feed(machine, now + 0.01, Alive(0, to))  # 5 is alive, but never claims
    assert probed


# ------------------------------------------------------------------ timers the driver waits for


def test_a_leader_needs_its_next_tick_at_its_next_heartbeat() -> None:
    machine = make(5)
    elect(machine, 1.0)
    assert machine.next_timer() == pytest.approx(1.0 + TIMINGS.heartbeat_interval)
    tick(machine, 1.1)
    assert machine.next_timer() == pytest.approx(1.2)


def test_a_follower_needs_its_next_tick_when_its_leader_would_count_as_silent() -> None:
    machine = follower_of(3, leader=5, now=2.0)
    deadline = machine.next_timer()
    assert 2.0 + TIMINGS.failure_timeout < deadline < 2.0 + TIMINGS.failure_timeout + 0.01
    assert machine.leader == 5
    tick(machine, deadline)  # a tick at that moment finds the leader silent
    assert machine.leader is None


def test_a_peer_without_a_leader_ticks_five_times_a_heartbeat() -> None:
    machine = make(3)
    tick(machine, 0.0)  # sent Election, waits for Alive
    assert machine.next_timer() == pytest.approx(TIMINGS.heartbeat_interval / 5)


def test_peers_that_refused_a_probe_with_a_lagging_view_are_asked_again_soon() -> None:
    machine = make(4)
    live = (1, 2, 3, 4)  # 5, the old leader, is gone from this peer's view
    assert recipients(tick(machine, 0.0, live), Probe) == {1, 2, 3, 5}
    lagging = [ProbeReply(0, p, 1, False, 5) for p in (2, 3)]  # they still see 5 alive
    feed(machine, 0.001, *grants(1, 1), *lagging)
    assert machine.phase is Phase.PROBING  # neither won nor lost
    assert messages(tick(machine, 0.02, live), Probe) == []
    again = tick(machine, TIMINGS.heartbeat_interval / 2, live)
    assert recipients(again, Probe) == {2, 3}
    claim = feed(machine, 0.06, *grants(1, 2))
    assert recipients(claim, Coordinator) == {1, 2, 3, 5}


# ------------------------------------------------------------------ a wiped peer (amnesia)


def granted(ready: Ready) -> list[bool]:
    """Whether each probe reply and claim ack in the batch grants, in order."""
    answers = messages(ready, ProbeReply) + messages(ready, CoordinatorAck)
    return [answer.granted for answer in answers]


def test_an_amnesiac_peer_acks_no_claimant_until_it_hears_a_leader() -> None:
    machine = make(2, amnesiac=True)
    assert machine.amnesiac
    tick(machine, 0.0)
    out = feed(machine, 0.05, Coordinator(1, 4, LogPosition()))
    assert sent(out, CoordinatorAck) == [(4, CoordinatorAck(1, 2, False))]
    assert out.hard_state == HardState(term=1, voted_for=None)  # the term adopted, no vote
    assert granted(feed(machine, 0.06, Probe(2, 5, LogPosition()))) == [False]
    assert not machine.leader_contact(0.07, 0, 3)  # a stale leader is no leader
    assert machine.amnesiac
    assert machine.leader_contact(0.1, 1, 4)  # the leader of its term: it votes for it
    assert not machine.amnesiac
    assert machine.ready().hard_state == HardState(term=1, voted_for=4)
    assert granted(feed(machine, 0.15, Coordinator(1, 5, LogPosition()))) == [False]
    assert granted(feed(machine, 0.2, Coordinator(2, 5, LogPosition()))) == [True]


def test_an_amnesiac_peer_in_a_new_cluster_votes_after_the_failure_timeout() -> None:
    machine = make(2, amnesiac=True)
    start = 10.0  # the failure timeout runs from the first `now` it sees
    tick(machine, start)
    for now in (start + 0.1, start + TIMINGS.failure_timeout):
        tick(machine, now)
        claim = (Probe(1, 5, LogPosition()), Coordinator(1, 5, LogPosition()))
        assert granted(feed(machine, now, *claim)) == [False, False]
        assert machine.amnesiac
    later = start + TIMINGS.failure_timeout + 0.01
    tick(machine, later)
    assert not machine.amnesiac
    out = feed(machine, later, Probe(2, 5, LogPosition()), Coordinator(2, 5, LogPosition()))
    assert granted(out) == [True, True]
    assert out.hard_state == HardState(term=2, voted_for=5)


def test_an_amnesiac_peer_starts_no_election() -> None:
    machine = make(5, amnesiac=True)  # the highest id: it would probe at once
    for step in range(10):
        now = step * 0.05
        out = tick(machine, now)
        out.messages += feed(machine, now, Election(0, 2)).messages  # "take over, 5"
        assert messages(out, Probe) == [] and messages(out, Coordinator) == []
        assert messages(out, Election) == []
    assert machine.role is Role.FOLLOWER and machine.term == 0
    out = tick(machine, TIMINGS.failure_timeout + 0.01)  # it has heard no leader since
    assert recipients(out, Probe) == {1, 2, 3, 4}


def test_a_new_cluster_of_amnesiac_peers_elects_one_leader_after_the_failure_timeout() -> None:
    cluster = {p: make(p, seed=p, amnesiac=True) for p in PEERS}
    first_leader_at = None
    for step in range(100):  # 1 s, every message delivered at once
        now = step * 0.01
        batch = []
        for machine in cluster.values():
            machine.tick(now, PEERS)
            batch += machine.ready().messages
        while batch:
            envelope, batch = batch[0], batch[1:]
            cluster[envelope.to].step(now, envelope.message)
            batch += cluster[envelope.to].ready().messages
        if first_leader_at is None and any(m.role is Role.LEADER for m in cluster.values()):
            first_leader_at = now
    assert first_leader_at is not None
    assert TIMINGS.failure_timeout < first_leader_at < TIMINGS.failure_timeout + 0.1
    assert {(m.leader, m.term) for m in cluster.values()} == {(5, 1)}
