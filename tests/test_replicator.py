"""Ring 1: log replication (`peer.protocol.replication.Replicator`), driven directly.

Each test builds one or a few replicators over plain `Log`s and carries their messages by
hand, or with `Network` (which delivers everything until all are quiet, like etcd raft's
test network). `now` is passed in; no sleeps, no I/O. Each test is named after the rule it
checks (see the module docstring of `peer.protocol.replication` and the Raft paper,
Ongaro & Ousterhout 2014, cited as §N).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import pytest

from peer.protocol.log import Entry, Log
from peer.protocol.messages import Append, AppendReply, FetchLog, LogChunk, ReplicationMessage
from peer.protocol.replication import Replicator

PEERS = (1, 2, 3)
FIVE = (1, 2, 3, 4, 5)
Message = ReplicationMessage
Sends = list[tuple[int, Message]]
M = TypeVar("M")


# ------------------------------------------------------------------ helpers


def entries(*terms: int, start: int = 1, tag: str = "c") -> list[Entry]:
    """Entries of `terms` at consecutive indexes from `start`, commands `{tag}{index}`."""
    return [Entry(term, start + i, f"{tag}{start + i}") for i, term in enumerate(terms)]


def make(
    node_id: int,
    log: Iterable[Entry] = (),
    peers: tuple[int, ...] = PEERS,
    commit_index: int = 0,
    max_batch: int = 512,
    resend_after: float = 0.25,
) -> Replicator:
    return Replicator(node_id, peers, Log(list(log)), commit_index, max_batch, resend_after)


def leader(
    log: Iterable[Entry] = (),
    term: int = 1,
    peers: tuple[int, ...] = PEERS,
    max_batch: int = 512,
    resend_after: float = 0.25,
) -> Replicator:
    """Peer 1 leading `term` with its own log as the best one: its no-op is appended
    (and on its disk)."""
    machine = make(1, log, peers, max_batch=max_batch, resend_after=resend_after)
    machine.become_leader(0.0, term, best_peer=1)
    written(machine)
    return machine


def written(machine: Replicator, now: float = 0.0) -> None:
    """The driver's write of the machine's whole log landed."""
    machine.persisted(now, machine.log.last_index, machine.log.last_term)


def follower(
    node_id: int,
    log: Iterable[Entry] = (),
    term: int = 1,
    peers: tuple[int, ...] = PEERS,
    max_batch: int = 512,
) -> Replicator:
    """A peer that has heard peer 1's empty heartbeat of `term` (its answer is dropped)."""
    machine = make(node_id, log, peers, max_batch=max_batch)
    machine.on_append(Append(term, 1, 0, 0, (), 0))
    machine.take_messages()
    return machine


def _noop_command() -> str:
    """The command of a new leader's no-op (opaque here, wherever it is defined)."""
    machine = Replicator(1, (1,), Log())
    machine.become_leader(0.0, 1, best_peer=1)
    return machine.log.entries[0].command


NOOP = _noop_command()


def step(machine: Replicator, now: float, message: Message) -> None:
    if isinstance(message, Append):
        machine.on_append(message)
    elif isinstance(message, AppendReply):
        machine.on_append_reply(now, message)
    elif isinstance(message, FetchLog):
        machine.on_fetch(message)
    else:
        machine.on_log_chunk(now, message)


def sent(sends: Sends, kind: type[M], to: int | None = None) -> list[M]:
    """Every message of `kind` in `sends` (to `to` only, if given)."""
    return [m for t, m in sends if isinstance(m, kind) and (to is None or t == to)]


def loaded(sends: Sends, to: int | None = None) -> list[Append]:
    """The Appends in `sends` that carry entries."""
    return [a for a in sent(sends, Append, to) if a.entries]


class Network:
    """Carries messages between replicators; one addressed to a peer not in it is lost."""

    def __init__(self, *machines: Replicator) -> None:
        self.machines = {m.id: m for m in machines}

    def deliver(self, now: float, sends: Sends) -> None:
        """Every peer's writes land before its messages go (a leader's own, too)."""
        for machine in self.machines.values():
            written(machine, now)
        for to, message in sends:
            if to in self.machines:
                step(self.machines[to], now, message)

    def run(self, now: float, sends: Sends | None = None) -> Sends:
        """Deliver `sends`, then whatever everyone sends, until quiet; all that went."""
        carried: Sends = []
        batch = list(sends or [])
        for _ in range(200):
            batch += [s for m in self.machines.values() for s in m.take_messages()]
            if not batch:
                return carried
            carried += batch
            self.deliver(now, batch)
            batch = []
        raise AssertionError("the network never went quiet")


def serving_leader(
    *followers: Replicator, peers: tuple[int, ...] = PEERS, resend_after: float = 0.25
) -> tuple[Replicator, Network]:
    """Peer 1 leading term 1 over an empty log, its no-op committed with `followers`."""
    machine = leader(peers=peers, resend_after=resend_after)
    net = Network(machine, *followers)
    net.run(0.0)
    assert machine.serving
    machine.take_committed()
    return machine, net


# ------------------------------------------------------------------ leader: committing


def test_entry_of_own_term_commits_once_a_majority_holds_it_and_everything_below() -> None:
    """§5.3: a leader commits an entry of its term once a majority stores it; §5.4.2:
    all entries before it commit with it."""
    old = entries(1, 1)
    machine = leader(old, term=2, peers=FIVE)
    assert machine.noop_index == 3
    machine.take_messages()
    machine.on_append_reply(0.0, AppendReply(2, 2, True, 3))
    assert machine.commit_index == 0  # itself and peer 2: 2 of 5
    assert not machine.serving
    machine.on_append_reply(0.0, AppendReply(2, 3, True, 3))
    assert machine.commit_index == 3  # 3 of 5
    assert machine.serving
    assert machine.take_committed() == [*old, Entry(2, 3, NOOP)]


def test_earlier_term_entry_commits_only_through_an_entry_of_the_current_term() -> None:
    """§5.4.2, Figure 8: a leader never commits an entry of an earlier term by counting
    replicas; it commits once an entry of its own term is on a majority."""
    (old,) = entries(2, tag="old")
    machine = leader([old], term=3, max_batch=1)
    peer = follower(2, term=3)
    net = Network(machine, peer)  # peer 3 is partitioned away
    noop = Entry(3, 2, NOOP)
    refused = machine.take_messages()
    assert loaded(refused, 2) == [Append(3, 1, 1, 2, (noop,), 0)]
    net.deliver(0.0, refused)  # peer 2 lacks index 1: refuses, hints 0
    net.deliver(0.0, peer.take_messages())
    only_old = machine.take_messages()
    assert loaded(only_old, 2) == [Append(3, 1, 0, 0, (old,), 0)]  # the no-op not with it
    net.deliver(0.0, only_old)
    assert peer.log.entries == [old]
    matched = peer.take_messages()
    assert matched == [(1, AppendReply(3, 2, True, 1))]  # it matches the old entry only
    net.deliver(0.0, matched)
    # The old entry is now on 2 of 3 peers, yet it is not committed.
    assert machine.commit_index == 0
    assert machine.take_committed() == []
    assert not machine.serving
    with_noop = machine.take_messages()
    assert loaded(with_noop, 2) == [Append(3, 1, 1, 2, (noop,), 0)]
    net.run(0.0, with_noop)
    assert machine.commit_index == 2  # the no-op of term 3 commits the old entry with it
    assert machine.serving
    assert machine.take_committed() == [old, noop]
    machine.heartbeat(0.1, 2)  # peer 2 is told with the next heartbeat
    net.run(0.1)
    assert peer.commit_index == 2


def test_a_follower_waiting_for_a_commit_is_told_at_once_others_with_their_next_append() -> None:
    """Module docstring (`_announce_commit`): a new commit index goes at once to an idle
    follower that waits for it (it forwarded the write, or runs what it assigns), not at
    the next heartbeat; a busy one learns it when its reply comes; the others with their
    next append or heartbeat."""
    p2, p3 = follower(2, peers=FIVE), follower(3, peers=FIVE)
    machine, net = serving_leader(p2, p3, peers=FIVE)  # peers 4 and 5 are away
    out = machine.take_messages()
    assert out == []
    (c1,) = machine.propose(1.0, ["c1"], notify=(3, 4))
    net.deliver(1.0, machine.take_messages())
    net.deliver(1.0, p2.take_messages())
    assert machine.commit_index == 1  # 2 of 5: c1 not yet committed
    assert machine.take_messages() == []
    net.deliver(1.0, p3.take_messages())
    assert machine.commit_index == 2
    out = machine.take_messages()  # 4 waits too, but has c1's Append in flight
    assert out == [(3, Append(1, 1, 2, 1, (), 2))]
    net.run(1.0, out)
    assert p3.commit_index == 2 and p3.take_committed()[-1] == c1
    assert p2.commit_index == 1  # told with its next append
    machine.heartbeat(1.05, 2)
    net.run(1.05)
    assert p2.commit_index == 2
    machine.on_append_reply(1.1, AppendReply(1, 4, True, 2))  # busy 4 answers at last
    assert machine.take_messages() == [(4, Append(1, 1, 2, 1, (), 2))]


def test_reply_of_another_term_or_after_step_down_is_ignored() -> None:
    """Terms are the election's (§5.1): a reply of another term, or one reaching a peer
    that has stepped down, moves nothing; a peer that no longer leads proposes nothing."""
    machine = leader(term=2)
    machine.take_messages()
    machine.on_append_reply(0.0, AppendReply(1, 2, True, 1))
    assert machine.commit_index == 0  # 2 of 3 would have committed the no-op
    assert not machine.serving
    assert machine.take_messages() == []
    machine.step_down(3)
    machine.on_append_reply(0.0, AppendReply(2, 2, True, 1))
    machine.on_append_reply(0.0, AppendReply(3, 2, True, 1))
    assert machine.commit_index == 0
    assert not machine.leading and not machine.serving
    assert machine.propose(0.0, ["c"]) == []
    assert machine.take_messages() == []


def test_append_from_a_new_leader_makes_a_leader_a_follower() -> None:
    """§5.1: a leader that accepts another's Append (the election checked its term) no
    longer leads nor serves writes."""
    machine, _ = serving_leader(follower(2))
    machine.on_append(Append(2, 3, 1, 1, (), 1))
    assert machine.term == 2
    assert not machine.leading and not machine.serving
    assert machine.propose(0.0, ["c"]) == []
    assert sent(machine.take_messages(), AppendReply) == [AppendReply(2, 1, True, 1)]


# ------------------------------------------------------------------ follower


def test_follower_drops_a_conflicting_suffix_and_keeps_matching_entries() -> None:
    """§5.3, AppendEntries receiver rule 3: an existing entry that conflicts with a new
    one (same index, other term) is deleted with all after it; matching ones are kept."""
    shared = entries(1, 1)
    stale = entries(2, 2, 2, 2, start=3, tag="stale")
    fresh = entries(3, 3, start=3, tag="fresh")
    machine = make(2, shared + stale)
    machine.on_append(Append(3, 1, 1, 1, (shared[1], *fresh), 0))
    assert machine.log.entries == shared + fresh  # stale 3..6 gone, 5 and 6 included
    assert machine.log.entries[1] is shared[1]  # the matching entry was kept, not rewritten
    assert machine.take_persist() == (3, fresh)  # rewrite from the first changed index
    assert machine.take_persist() is None
    assert machine.take_messages() == [(1, AppendReply(3, 2, True, 4))]


def test_follower_keeps_its_entries_after_an_append_that_only_repeats_some() -> None:
    """§5.3: only a conflict truncates; a late or duplicate Append whose entries all
    match leaves the entries after them in place."""
    log = entries(1, 1, 1)
    machine = make(2, log)
    machine.on_append(Append(1, 1, 0, 0, (log[0],), 0))
    assert machine.log.entries == log
    assert machine.take_messages() == [(1, AppendReply(1, 2, True, 1))]


def test_follower_refuses_an_append_whose_prev_does_not_match_and_hints_where_to_retry() -> None:
    """§5.3 (consistency check, and the optimisation at its end): a follower refuses an
    Append whose (prev_index, prev_term) it does not hold, keeps its log, and hints the
    index to retry after: its last index if its log is shorter, else the index before
    the conflicting term's first entry, never below its commit index."""
    short = make(2, entries(1, 1))
    short.on_append(Append(3, 1, 5, 3, tuple(entries(3, start=6)), 0))
    assert short.take_messages() == [(1, AppendReply(3, 2, False, 2))]
    assert short.log.entries == entries(1, 1)
    assert short.take_persist() is None
    assert not short.in_sync

    conflicting = make(2, entries(1, 1, 2, 2, 2))
    conflicting.on_append(Append(3, 1, 4, 3, (), 0))
    assert conflicting.take_messages() == [(1, AppendReply(3, 2, False, 2))]
    assert conflicting.log.entries == entries(1, 1, 2, 2, 2)

    committed = make(2, entries(2, 2, 2, 2), commit_index=3)
    committed.on_append(Append(3, 1, 4, 3, (), 0))
    assert committed.take_messages() == [(1, AppendReply(3, 2, False, 3))]


def test_leader_backs_up_next_index_on_refusal_until_the_follower_is_in_sync() -> None:
    """§5.3: after a refusal the leader retries from an earlier index until the logs
    match, then overwrites the follower's conflicting entries with its own."""
    mine = entries(1, 1, 3, 3, 3)
    machine = leader(mine, term=4)
    peer = follower(2, mine[:2] + entries(2, 2, 2, 2, 2, start=3, tag="stale"), term=4)
    carried = Network(machine, peer).run(0.0)  # peer 3 is away
    to_peer = loaded(carried, 2)
    assert [a.prev_index for a in to_peer] == [5, 2]  # refused at 5; the hint skips term 2
    replies = sent(carried, AppendReply, 1)
    assert replies[0] == AppendReply(4, 2, False, 2)
    assert peer.log.entries == machine.log.entries == [*mine, Entry(4, 6, NOOP)]
    assert machine.commit_index == 6
    machine.heartbeat(0.1, 2)  # the commit goes with the next heartbeat
    Network(machine, peer).run(0.1)
    assert peer.commit_index == 6
    assert peer.in_sync


def test_follower_commit_never_exceeds_what_it_has_matched() -> None:
    """§5.3, AppendEntries receiver rule 5: commit = min(leader commit, index of the last
    new entry), so entries the leader has not matched are never applied."""
    shared = entries(1, 1)
    machine = make(2, shared + entries(1, 1, 1, start=3, tag="unmatched"))
    machine.on_append(Append(2, 1, 2, 1, (), 5))  # the leader has committed its own 3..5
    assert machine.commit_index == 2
    assert machine.take_committed() == shared
    assert not machine.in_sync
    (fresh,) = entries(2, start=3, tag="fresh")
    machine.on_append(Append(2, 1, 2, 1, (fresh,), 5))
    assert machine.commit_index == 3
    assert machine.take_committed() == [fresh]
    assert machine.log.entries == [*shared, fresh]
    assert machine.leader_commit == 5
    assert not machine.in_sync
    machine.on_append(Append(2, 1, 3, 2, (), 2))  # an older commit moves nothing back
    assert machine.commit_index == 3
    assert machine.in_sync


# ------------------------------------------------------------------ leader: flow control


def test_a_window_of_appends_in_flight_per_follower_then_group_commit() -> None:
    """Module docstring: up to `window` Appends in flight per follower; what is proposed
    while the window is full goes out together in the next one, once a reply comes.
    (One follower, so no spare: those have their own tests below.)"""
    p2 = follower(2)
    machine, net = serving_leader(p2, peers=(1, 2))  # the no-op's reply opened the window
    machine.window = 2
    (c1,) = machine.propose(1.0, ["c1"])
    (c2,) = machine.propose(1.05, ["c2"])
    first = machine.take_messages()
    assert [a.entries for a in loaded(first, 2)] == [(c1,), (c2,)]  # two in flight
    (c3,) = machine.propose(1.1, ["c3"])
    (c4,) = machine.propose(1.1, ["c4"])
    assert machine.take_messages() == []  # the window is full
    machine.heartbeat(1.15, 2)
    beat = machine.take_messages()
    assert [(a.prev_index, a.entries) for a in sent(beat, Append)] == [(1, ())]  # as matched
    net.deliver(1.15, beat)
    net.deliver(1.15, p2.take_messages())  # p2 answers the beat, not c1's Append
    assert machine.take_messages() == []  # its window is still full
    net.deliver(1.2, first[:1])  # c1 reaches p2
    net.deliver(1.2, p2.take_messages())
    batch = machine.take_messages()
    assert [a.entries for a in loaded(batch, 2)] == [(c3, c4)]  # c3 and c4 together
    net.run(1.2, first[1:] + batch)
    assert p2.log.entries == machine.log.entries
    assert machine.commit_index == 5


def test_under_load_the_followers_a_majority_does_not_need_get_entries_by_heartbeat() -> None:
    """Module docstring (`_spares`): once enough followers are busy (an Append in flight)
    to make a majority with the leader, the others are spares: a proposal goes to the
    busy ones alone, and a spare gets everything it lacks with its heartbeat."""
    followers = [follower(n) for n in (2, 3, 4, 5)]
    machine, net = serving_leader(*followers, peers=FIVE)
    (c1,) = machine.propose(1.0, ["c1"])
    out = machine.take_messages()
    assert all([a.entries for a in loaded(out, n)] == [(c1,)] for n in (2, 3, 4, 5))  # idle
    (c2,) = machine.propose(1.01, ["c2"])  # all four busy with c1: 2 and 3 are enough
    out2 = machine.take_messages()
    assert [a.entries for a in loaded(out2, 2)] == [(c2,)]
    assert [a.entries for a in loaded(out2, 3)] == [(c2,)]
    assert loaded(out2, 4) == [] and loaded(out2, 5) == []
    (c3,) = machine.propose(1.02, ["c3"])
    out3 = machine.take_messages()
    assert loaded(out3, 4) == []  # still a spare
    machine.heartbeat(1.1, 4)
    beat = machine.take_messages()
    assert [a.entries for a in loaded(beat, 4)] == [(c2, c3)]  # what it lacks, at once
    written(machine)
    net.run(1.1, out + out2 + out3 + beat)
    machine.heartbeat(1.2, 5)
    net.run(1.2, machine.take_messages())
    assert machine.commit_index == c3.index
    assert all(f.log.entries == machine.log.entries for f in followers)


def test_spares_stay_spares_for_the_linger_after_the_last_busy_majority() -> None:
    """Module docstring (`_spares`): the load is judged at each send; once the followers
    ahead were all busy, the others stay spares for `spare_linger` seconds even at a
    send that finds the followers ahead idle, and then get each entry again."""
    p2, p3 = follower(2), follower(3)
    machine, net = serving_leader(p2, p3)
    machine.spare_linger = 0.1
    machine.propose(1.0, ["c1"])
    first = machine.take_messages()
    (c2,) = machine.propose(1.01, ["c2"])  # 2 is busy with c1: 3 is a spare until 1.11
    second = machine.take_messages()
    assert loaded(second, 3) == []
    written(machine)
    net.run(1.02, [s for s in first + second if s[0] == 2])  # 2 answers: idle again
    (c3,) = machine.propose(1.05, ["c3"])
    third = machine.take_messages()
    assert loaded(third, 3) == []  # within the linger
    written(machine)
    net.run(1.06, third)
    (c4,) = machine.propose(1.2, ["c4"])  # past it, with 2 idle: 3 gets what it lacks
    out = machine.take_messages()
    assert [a.entries for a in loaded(out, 3)] == [(c2, c3, c4)]


def test_spares_overtake_a_follower_ahead_that_stops_answering() -> None:
    """A follower ahead that goes silent does not hold the commit back: the spares'
    answers (here to their last Append) rank them ahead of it, so they are sent what it
    lacks and carry the commit from then on."""
    followers = {n: follower(n) for n in (2, 3, 4, 5)}
    machine, net = serving_leader(*followers.values(), peers=FIVE)
    machine.propose(1.0, ["c1"])
    first = machine.take_messages()
    machine.propose(1.01, ["c2"])  # 2 and 3 busy: 4 and 5 are spares
    second = machine.take_messages()
    written(machine)
    alive = [s for s in first + second if s[0] != 2]  # 2 stopped answering
    assert loaded(second, 4) == [] and loaded(second, 5) == []
    net.run(1.02, alive)
    assert machine.commit_index == 3  # c2 too: 4 answered c1, ranked ahead of 2, got c2
    (c3,) = machine.propose(1.12, ["c3"])
    out = [s for s in machine.take_messages() if s[0] != 2]
    written(machine)
    net.run(1.12, out)
    assert machine.commit_index == c3.index  # without 2: the others are ahead of it now


def test_a_spare_whose_heartbeat_could_not_carry_all_it_lacks_gets_the_window() -> None:
    """Catching up is judged by what one Append carries (entries and bytes): a spare
    whose heartbeat Append was cut short by `max_bytes` is sent the rest at its reply,
    not one Append per heartbeat (big batch entries would leave it far behind)."""
    followers = {n: follower(n) for n in (2, 3, 4, 5)}
    machine, net = serving_leader(*followers.values(), peers=FIVE)
    machine.max_bytes = 1  # every Append carries one entry
    machine.propose(1.0, ["c1"])
    net.run(1.0, machine.take_messages())  # everyone holds c1
    machine.propose(1.01, ["c2"])  # to everyone (nobody was busy)
    to_all = machine.take_messages()
    machine.propose(1.02, ["c3"])  # 2 and 3 busy: 4 and 5 spares
    (c4,) = machine.propose(1.03, ["c4"])
    ahead = machine.take_messages()
    assert loaded(ahead, 4) == []
    written(machine)
    net.run(1.04, [s for s in to_all if s[0] in (2, 3)] + ahead)  # 2 and 3 hold c4
    machine.heartbeat(1.05, 4)
    beat = machine.take_messages()
    assert [a.entries[-1].command for a in loaded(beat, 4)] == ["c3"]  # cut short
    net.deliver(1.05, [s for s in to_all if s[0] == 4] + beat)
    net.deliver(1.05, followers[4].take_messages())  # 4 answers, still behind 2 and 3
    assert [a.entries for a in loaded(machine.take_messages(), 4)] == [(c4,)]  # at once


def test_probing_followers_do_not_make_the_cluster_busy() -> None:
    """A follower ahead that probes (its Appends were lost: it may be dead) does not
    count as busy, even with a heartbeat's probe in flight, so it cannot keep the
    others spares: they get each entry at once again once the linger is over."""
    followers = {n: follower(n) for n in (2, 3, 4, 5)}
    machine, net = serving_leader(*followers.values(), peers=FIVE)
    machine.propose(1.0, ["c1"])
    net.run(1.0, machine.take_messages())  # everyone holds c1: 2 and 3 rank first
    machine.propose(1.01, ["c2"])  # to everyone (nobody was busy), and lost
    machine.take_messages()
    machine.propose(1.02, ["c3"])
    assert loaded(machine.take_messages(), 4) == []  # 2 and 3 busy: 4 and 5 spares
    for peer in (2, 3):  # at 1.3 all that was in flight expired; heartbeats probe
        machine.heartbeat(1.3, peer)
    probes = machine.take_messages()
    assert [len(loaded(probes, p)) for p in (2, 3)] == [1, 1]
    (c4,) = machine.propose(1.31, ["c4"])
    out = machine.take_messages()
    assert loaded(out, 4) and loaded(out, 4)[-1].entries[-1] == c4
    assert loaded(out, 5) and loaded(out, 5)[-1].entries[-1] == c4


def test_a_follower_waiting_to_hear_of_a_commit_is_never_a_spare() -> None:
    """A follower that forwarded the write (or was given a task) hears of its commit at
    once, so it gets the entry at once even when a majority is busy without it."""
    p2, p3 = follower(2), follower(3)
    machine, _ = serving_leader(p2, p3)
    machine.propose(1.0, ["c1"])
    machine.take_messages()  # both busy: 3 would be a spare
    (c2,) = machine.propose(1.01, ["c2"], notify=[3])
    assert [a.entries for a in loaded(machine.take_messages(), 3)] == [(c2,)]


def test_a_spare_that_asks_gets_what_it_lacks_and_the_commit_index_at_once() -> None:
    """`hurry` (a follower holds a read for a write it forwarded): a spare gets the
    entries it lacks now, not with its heartbeat, and hears of their commit as soon as
    its reply is in; one with an Append in flight hears of the commit after its reply."""
    followers = [follower(n) for n in (2, 3, 4, 5)]
    machine, net = serving_leader(*followers, peers=FIVE)
    (c1,) = machine.propose(1.0, ["c1"])
    out = machine.take_messages()
    (c2,) = machine.propose(1.01, ["c2"])  # all four busy with c1: 4 and 5 are spares
    out2 = machine.take_messages()
    assert loaded(out2, 4) == []
    written(machine)
    net.run(1.01, out + [m for m in out2 if m[0] != 4 and m[0] != 5])
    assert machine.commit_index == c2.index
    machine.hurry(1.02, 4)  # 4 has c1 and heard of no commit beyond it
    asked = machine.take_messages()
    (append,) = loaded(asked, 4)
    assert append.entries == (c2,) and append.commit == c2.index
    net.run(1.02, asked)
    assert followers[2].log.entries == machine.log.entries
    machine.hurry(1.03, 2)  # 2 holds everything: the commit index alone
    (told,) = [m for to, m in machine.take_messages() if to == 2]
    assert isinstance(told, Append) and told.entries == () and told.commit == c2.index
    machine.hurry(1.04, 9)  # not a follower: nothing
    assert machine.take_messages() == []


def test_with_no_follower_busy_every_follower_gets_each_entry_at_once() -> None:
    """On a quiet cluster (no busy majority within the linger: here each entry is
    answered before the next) there is no spare: every follower gets each entry."""
    p2, p3 = follower(2), follower(3)
    machine, net = serving_leader(p2, p3)
    for i in range(3):
        (entry,) = machine.propose(1.0 + i, [f"c{i}"])
        out = machine.take_messages()
        assert [a.entries for a in loaded(out, 2)] == [(entry,)]
        assert [a.entries for a in loaded(out, 3)] == [(entry,)]
        written(machine)
        net.run(1.0 + i, out)
        assert machine.commit_index == entry.index


def test_held_sends_go_out_as_one_append_per_follower_at_flush() -> None:
    """`hold_sends` (a driver cycle): proposals and replies only note who is owed an
    Append; `flush` sends each one Append with all of them, and more only while what
    waits is beyond one Append's batch and the window has room."""
    p2, p3 = follower(2), follower(3)
    machine, net = serving_leader(p2, p3)
    machine.hold_sends()
    made = [machine.propose(1.0, [f"c{i}"])[0] for i in range(3)]
    assert machine.take_messages() == []  # held
    machine.flush(1.0)
    out = machine.take_messages()
    assert [a.entries for a in loaded(out, 2)] == [tuple(made)]
    assert [a.entries for a in loaded(out, 3)] == [tuple(made)]
    net.run(1.0, out)
    assert machine.commit_index == made[-1].index
    machine.flush(1.1)
    assert machine.take_messages() == []  # nothing held: nothing owed
    machine.max_batch, machine.window = 2, 2
    machine.hold_sends()
    more = machine.propose(1.2, [f"d{i}" for i in range(5)])
    machine.flush(1.2)
    out = machine.take_messages()
    assert [a.entries for a in loaded(out, 2)] == [tuple(more[:2]), tuple(more[2:4])]  # window
    machine.propose(1.3, ["e"])
    assert loaded(machine.take_messages()) == []  # not held, but both windows are full


def test_after_a_refusal_one_append_probes_until_one_is_accepted() -> None:
    """Module docstring: a follower whose log's end is unknown (after a refusal) gets one
    Append at a time until one is accepted; then the window opens again."""
    machine, _ = serving_leader(follower(2), follower(3))
    machine.take_messages()
    machine.on_append_reply(1.0, AppendReply(1, 2, False, 0))  # say it lost its log
    probe = loaded(machine.take_messages(), 2)
    assert [(a.prev_index, len(a.entries)) for a in probe] == [(0, 1)]  # from the start
    machine.propose(1.0, ["c1"])
    machine.propose(1.0, ["c2"])
    assert loaded(machine.take_messages(), 2) == []  # one at a time while probing
    machine.on_append_reply(1.01, AppendReply(1, 2, True, 1))
    assert [len(a.entries) for a in loaded(machine.take_messages(), 2)] == [2]


def test_append_in_flight_counts_as_lost_after_resend_after() -> None:
    """Module docstring: an Append in flight holds back the next only for `resend_after`;
    after that, a proposal or a heartbeat sends again from the follower's next index."""
    machine, _ = serving_leader(follower(2), follower(3), resend_after=0.25)
    machine.window = 1  # (the loss rule alone; the window has its own test)
    machine.spare_linger = 0.0  # (and so have spares)
    (c1,) = machine.propose(1.0, ["c1"])
    machine.take_messages()  # lost
    (c2,) = machine.propose(1.2, ["c2"])
    machine.heartbeat(1.24, 2)
    assert loaded(machine.take_messages()) == []
    (c3,) = machine.propose(1.25, ["c3"])
    again = machine.take_messages()
    assert [(a.prev_index, a.entries) for a in loaded(again)] == [(1, (c1, c2, c3))] * 2
    machine.heartbeat(1.4, 2)
    assert loaded(machine.take_messages()) == []
    machine.heartbeat(1.5, 2)
    assert [a.entries for a in loaded(machine.take_messages())] == [(c1, c2, c3)]


def test_no_append_carries_more_than_max_batch_entries() -> None:
    """Module docstring: at most `max_batch` entries per Append; a long log reaches a
    follower over several rounds."""
    mine = entries(1, 1, 1, 1, 1)
    machine = leader(mine, term=2, max_batch=2)
    peer = follower(2, term=2)
    net = Network(machine, peer)
    carried = net.run(0.0)
    to_peer = loaded(carried, 2)
    assert max(len(a.entries) for a in to_peer) == 2
    assert [a.entries[0].index for a in to_peer] == [6, 1, 3, 5]  # refused, then 3 rounds
    assert peer.log.entries == machine.log.entries
    assert machine.commit_index == 6
    proposed = machine.propose(1.0, [f"w{i}" for i in range(5)])
    out = machine.take_messages()
    assert [a.entries for a in loaded(out, 2)] == [tuple(proposed[:2])]
    carried = net.run(1.0, out)
    assert all(len(a.entries) <= 2 for a in loaded(carried))
    assert peer.log.entries == machine.log.entries
    assert machine.commit_index == 11


def test_reply_is_news_only_unless_it_is_the_idle_answer() -> None:
    """Module docstring (`reply_is_news`): an accepted reply that matches nothing beyond
    the commit index, to a follower with nothing to send and no commit it waits for,
    needs no cycle of its own."""
    machine, _ = serving_leader(follower(2), follower(3))
    machine.window = 1  # one Append in flight: entries then wait for a reply
    machine.spare_linger = 0.0  # (spares have their own tests)
    idle = AppendReply(1, 2, True, 1)
    assert not machine.reply_is_news(idle)
    assert machine.reply_is_news(AppendReply(1, 2, False, 0))
    assert machine.reply_is_news(AppendReply(1, 2, True, 2))
    assert machine.reply_is_news(AppendReply(2, 2, True, 1))
    machine.propose(1.0, ["c1"])
    assert not machine.reply_is_news(idle)  # c1 is in flight to peer 2: its reply counts
    assert machine.reply_is_news(AppendReply(1, 2, True, 2))
    machine.propose(1.0, ["c2"])
    assert machine.reply_is_news(idle)  # c2 waits for peer 2 to answer for c1
    written(machine)
    machine.on_append_reply(1.0, AppendReply(1, 2, True, 2))
    assert machine.commit_index == 2
    machine.on_append_reply(1.0, AppendReply(1, 2, True, 3))
    assert machine.commit_index == 3  # the leader and peer 2 are a majority of 3
    acked_c1 = AppendReply(1, 3, True, 2)  # peer 3, late: but c2 waits to be sent to it
    assert machine.reply_is_news(acked_c1)
    machine.take_messages()
    machine.on_append_reply(1.0, acked_c1)
    assert [a.entries for a in loaded(machine.take_messages(), 3)] == [(Entry(1, 3, "c2"),)]
    late = AppendReply(1, 3, True, 3)  # its ack of c2, after c2 committed
    assert not machine.reply_is_news(late)


# ------------------------------------------------------------------ new leader: log sync


def _syncing_leader() -> tuple[Replicator, Replicator, list[Entry], list[Entry]]:
    """Peer 1 starts leading term 3 and must fetch peer 2's longer, newer log (both with
    max_batch 2); peer 1 holds a stale index 3 of term 1 beyond its commit index 2."""
    shared = entries(1, 1)
    best = entries(2, 2, 2, start=3, tag="best")
    machine = make(1, [*shared, Entry(1, 3, "mine3")], commit_index=2, max_batch=2)
    source = follower(2, shared + best, term=3, max_batch=2)
    machine.take_committed()
    machine.become_leader(0.0, 3, best_peer=2)
    return machine, source, shared, best


def test_new_leader_fetches_the_best_log_then_appends_its_noop_and_serves_once_committed() -> None:
    """Module docstring (§5.4.1, §8): a new leader first fetches the most up-to-date log
    among its acking majority, chunk by chunk, then appends a no-op of its term, and
    serves writes only once that no-op is committed."""
    machine, source, shared, best = _syncing_leader()
    asked = machine.take_messages()
    assert asked == [(2, FetchLog(3, 1, 3))]  # from its commit index on
    assert not machine.serving
    assert machine.propose(0.0, ["w"]) == []
    assert machine.take_messages() == []
    assert machine.log.last_index == 3 and machine.log.last_term == 1  # no no-op yet

    source.on_fetch(FetchLog(3, 1, 3))
    first = source.take_messages()
    assert first == [(1, LogChunk(3, 2, 3, tuple(best[:2]), 5))]  # max_batch entries
    Network(machine).deliver(0.0, first)
    assert machine.log.entries == shared + best[:2]  # its own stale index 3 replaced
    assert machine.take_messages() == [(2, FetchLog(3, 1, 5))]
    assert not machine.serving
    assert machine.propose(0.0, ["w"]) == []

    source.on_fetch(FetchLog(3, 1, 5))
    last = source.take_messages()
    Network(machine).deliver(0.0, last)
    noop = Entry(3, 6, NOOP)
    assert machine.log.entries == [*shared, *best, noop]  # the no-op after the fetched log
    assert machine.noop_index == 6
    assert machine.take_persist() == (3, [*best, noop])
    appends = machine.take_messages()
    assert {to for to, _ in appends} == {2, 3}
    assert [a.entries for a in loaded(appends)] == [(noop,), (noop,)]
    assert not machine.serving  # the no-op is held, not committed
    assert machine.propose(0.0, ["w"]) == []

    Network(machine).deliver(0.0, last)  # the last chunk again: no second no-op
    assert machine.log.last_index == 6
    Network(source).deliver(0.0, [a for a in appends if a[0] == 2])
    Network(machine).deliver(0.0, source.take_messages())
    assert machine.commit_index == 6
    assert machine.serving
    assert machine.propose(0.0, ["w"]) == [Entry(3, 7, "w")]


def test_leader_with_the_best_log_appends_its_noop_at_once() -> None:
    """Module docstring: with no better log among its acking majority, a new leader
    fetches nothing and appends its no-op at once; it serves once that commits."""
    machine = leader(entries(1, 1), term=2)
    out = machine.take_messages()
    assert sent(out, FetchLog) == []
    assert machine.log.entries[-1] == Entry(2, 3, NOOP)
    assert [a.entries for a in loaded(out)] == [(Entry(2, 3, NOOP),)] * 2
    assert not machine.serving
    single = make(1, entries(1), peers=(1,))
    single.become_leader(0.0, 2, best_peer=1)
    assert not single.serving  # its own copy counts only once on its disk
    written(single)
    assert single.serving  # a cluster of one is its own majority
    assert single.commit_index == 2


def test_heartbeat_while_syncing_affirms_leadership_and_asks_the_source_again() -> None:
    """Module docstring: while a new leader fetches, its heartbeat is an empty Append
    that touches no entries, and the fetch is asked again of the source only."""
    machine, _, _, _ = _syncing_leader()
    machine.take_messages()
    machine.heartbeat(0.1, 2)
    assert machine.take_messages() == [(2, Append(3, 1, 0, 0, (), 0)), (2, FetchLog(3, 1, 3))]
    machine.heartbeat(0.1, 3)
    assert machine.take_messages() == [(3, Append(3, 1, 0, 0, (), 0))]
    other = make(3, entries(1, 1, 1, 1), commit_index=1)
    other.on_append(Append(3, 1, 0, 0, (), 0))
    assert other.log.entries == entries(1, 1, 1, 1)
    assert other.commit_index == 1
    assert other.take_persist() is None


@pytest.mark.parametrize(
    "chunk",
    [
        pytest.param(LogChunk(3, 2, 3, tuple(entries(2, 2, start=3, tag="best")), 5), id="dup"),
        pytest.param(LogChunk(2, 2, 5, tuple(entries(2, start=5, tag="best")), 5), id="term"),
        pytest.param(LogChunk(3, 3, 5, tuple(entries(2, start=5, tag="x")), 5), id="sender"),
    ],
)
def test_stale_or_duplicate_log_chunk_is_ignored(chunk: LogChunk) -> None:
    """Module docstring (log sync): a chunk not from the peer being fetched from, of
    another term, or not starting where the fetch stands changes nothing."""
    machine, source, shared, best = _syncing_leader()
    machine.take_messages()
    source.on_fetch(FetchLog(3, 1, 3))
    Network(machine).deliver(0.0, source.take_messages())  # fetch now stands at 5
    machine.take_messages()
    machine.take_persist()
    before = list(machine.log.entries)
    machine.on_log_chunk(0.0, chunk)
    assert machine.log.entries == before
    assert machine.take_messages() == []
    assert machine.take_persist() is None
    assert (machine.sync_from, machine.fetch_from) == (2, 5)
    assert not machine.serving
    machine.on_log_chunk(0.0, LogChunk(3, 2, 5, (best[2],), 5))  # the right one still works
    assert machine.log.entries == [*shared, *best, Entry(3, 6, NOOP)]


# ------------------------------------------------------------------ output


def test_committed_entries_are_handed_out_exactly_once_in_order() -> None:
    """Module docstring: each committed entry is handed out for applying once, in log
    order (§5.3: applied in log order; the state machine must see each exactly once)."""
    p2, p3 = follower(2), follower(3)
    machine = leader()
    net = Network(machine, p2, p3)
    handed: dict[int, list[Entry]] = {1: [], 2: [], 3: []}

    def take_all() -> None:
        for node_id, node in net.machines.items():
            handed[node_id] += node.take_committed()
            assert node.take_committed() == []

    net.run(0.0)
    take_all()
    machine.propose(1.0, ["c1", "c2"])
    take_all()  # nothing committed yet
    assert handed[1] == [Entry(1, 1, NOOP)]
    net.run(1.0)
    take_all()
    machine.propose(2.0, ["c3"])
    machine.propose(2.0, ["c4"])
    net.run(2.0)
    machine.heartbeat(3.0, 2)
    machine.heartbeat(3.0, 3)
    net.run(3.0)
    take_all()
    assert machine.commit_index == 5
    for node_id in (1, 2, 3):
        assert handed[node_id] == machine.log.entries, node_id
        assert [e.index for e in handed[node_id]] == [1, 2, 3, 4, 5]


def test_a_log_source_that_lost_what_it_acked_with_is_not_served_from() -> None:
    """Log sync with a wiped disk: the best acker answers the fetch with less than the
    log it acked with (it lost its disk in between). Serving from that answer could
    drop a committed entry, so the new leader takes nothing and says it must resign."""
    machine = make(1, entries(1, 1))
    machine.become_leader(0.0, 2, best_peer=2, best_index=5)
    machine.take_messages()
    machine.on_log_chunk(0.0, LogChunk(2, 2, machine.fetch_from, (), 0))
    assert machine.sync_lost and not machine.serving
    assert machine.log.last_index == 2 and machine.take_messages() == []
    assert machine.propose(0.0, ["w"]) == []
