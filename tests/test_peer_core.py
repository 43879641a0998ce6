"""Ring 1 for one peer's protocol core: `PeerCore`, driven through its one entry point
`cycle` only, each test named after the rule it checks (see the module docstring of
`peer.protocol.core`). One to three cores are wired by hand: every message a batch
sends goes, as `Received(now, message)`, into its target's next inbox, and what a batch
asks to persist is kept on a "disk" per peer (a restarted peer starts from it). Virtual
time moves in steps of `STEP`; no sleeps, no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from election import HardState, Role
from election.messages import (
    Alive,
    Coordinator,
    CoordinatorAck,
    Election,
    HeartbeatAck,
    LogPosition,
    Probe,
    ProbeReply,
)
from peer.protocol.commands import Finish, Noop, Outcome, Submit, TaskSpec, decode_command
from peer.protocol.core import PeerCore
from peer.protocol.cycle import Completed, CoreReady, Input, Persisted, Proposal, Received
from peer.protocol.log import Entry, Log
from peer.protocol.membership import Gossip
from peer.protocol.messages import (
    Append,
    AppendReply,
    FetchLog,
    LogChunk,
    PeerMessage,
    ResultItem,
    Results,
)
from peer.protocol.settings import Settings

STEP = 0.01  # virtual seconds between two cycles of every peer
PEERS = (1, 2, 3)
NOOP = Entry(1, 1, '{"op":"noop"}')


class Net:
    """Cores wired by hand. `step` runs one cycle on every peer that is up (the core
    decides whether it ticks) and only then delivers what the batches sent, so a message
    arrives in the next step; messages to a peer that is down are lost."""

    def __init__(
        self, peers: tuple[int, ...] = PEERS, up: tuple[int, ...] | None = None, seed: int = 7
    ) -> None:
        self.peers = peers
        self.seed = seed
        self.now = 0.0
        self.cores: dict[int, PeerCore] = {}
        self.inbox: dict[int, list[Input]] = {p: [] for p in peers}
        self.hard: dict[int, HardState] = {}  # the disk: hard state, log, commit index
        self.disk_log: dict[int, list[Entry]] = {p: [] for p in peers}
        self.disk_commit: dict[int, int] = dict.fromkeys(peers, 0)
        self.incarnation: dict[int, int] = dict.fromkeys(peers, 0)
        self.batches: list[tuple[int, CoreReady]] = []  # every batch, in order
        for node_id in peers if up is None else up:
            self.start(node_id)

    # ------------------------------------------------------------------ peers

    def start(self, node_id: int, wiped: bool = False) -> PeerCore:
        """Start (or restart) a peer from its disk; `wiped`: from an empty one."""
        if wiped:
            self.hard.pop(node_id, None)
            self.disk_log[node_id], self.disk_commit[node_id] = [], 0
        self.incarnation[node_id] += 1
        self.inbox[node_id] = []
        core = PeerCore(
            node_id,
            self.peers,
            Settings(),
            random.Random(self.seed * 100 + node_id * 10 + self.incarnation[node_id]),
            self.hard.get(node_id),
            self.incarnation[node_id],
            Log(list(self.disk_log[node_id])),
            self.disk_commit[node_id],
            amnesiac=wiped,
        )
        self.cores[node_id] = core
        return core

    def crash(self, node_id: int) -> None:
        del self.cores[node_id]
        self.inbox[node_id] = []

    # ------------------------------------------------------------------- time

    def cycle(self, node_id: int, *inputs: Input, tick: bool | None = None) -> CoreReady:
        """One cycle of one peer over its inbox (then `inputs`), its batch carried out."""
        inbox, self.inbox[node_id] = [*self.inbox[node_id], *inputs], []
        batch = self.cores[node_id].cycle(self.now, self.now, inbox, tick)
        self._persist(node_id, batch)
        self.deliver(batch)
        return batch

    def step(self, inputs: dict[int, list[Input]] | None = None) -> dict[int, CoreReady]:
        self.now = round(self.now + STEP, 6)
        batches = {}
        for node_id, core in sorted(self.cores.items()):
            inbox, self.inbox[node_id] = self.inbox[node_id], []
            inbox += (inputs or {}).get(node_id, [])
            batches[node_id] = batch = core.cycle(self.now, self.now, inbox)
            self._persist(node_id, batch)
        for batch in batches.values():
            self.deliver(batch)
        return batches

    def deliver(self, batch: CoreReady) -> None:
        for to, message in batch.early + batch.messages:
            if to in self.cores:
                self.inbox[to].append(Received(self.now, message))

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP)):
            self.step()

    def run_until(self, condition: Callable[[], bool], seconds: float = 5.0) -> bool:
        for _ in range(round(seconds / STEP)):
            if condition():
                return True
            self.step()
        return condition()

    def _persist(self, node_id: int, batch: CoreReady) -> None:
        self.batches.append((node_id, batch))
        if batch.hard_state is not None:
            self.hard[node_id] = batch.hard_state
        if batch.entries_from is not None:
            kept = self.disk_log[node_id][: batch.entries_from - 1]
            self.disk_log[node_id] = kept + batch.entries
            if batch.entries:  # the write landed at once: the core hears of it next cycle
                last = batch.entries[-1]
                self.inbox[node_id].append(Persisted(last.index, last.term))
        if batch.commit_index is not None:
            self.disk_commit[node_id] = batch.commit_index

    # ---------------------------------------------------------------- queries

    def leader(self) -> PeerCore | None:
        ready = [c for c in self.cores.values() if c.is_ready_leader]
        return ready[0] if len(ready) == 1 else None

    def settled(self) -> bool:
        """One ready leader; every peer up follows it and has applied its whole log."""
        leader = self.leader()
        return leader is not None and all(
            core.leader == leader.id
            and core.replicator.applied_index == leader.log.last_index
            and core.log.entries == leader.log.entries
            for core in self.cores.values()
        )


def settled(peers: tuple[int, ...] = PEERS, up: tuple[int, ...] | None = None) -> Net:
    net = Net(peers, up)
    assert net.run_until(net.settled), "no leader settled"
    return net


def the_leader(net: Net) -> PeerCore:
    leader = net.leader()
    assert leader is not None
    return leader


def submit(*specs: TaskSpec, at: float = 0.0) -> tuple[Submit]:
    return (Submit(at, specs or (TaskSpec("echo", "x"),)),)


def sent(batch: CoreReady, kind: type[Any]) -> list[tuple[int, Any]]:
    return [(to, m) for to, m in batch.messages if isinstance(m, kind)]


def lone() -> tuple[Net, PeerCore]:
    """A single-peer cluster that has elected itself and committed its no-op."""
    net = Net((1,))
    core = net.cores[1]
    assert net.run_until(lambda: core.is_ready_leader, 1.0)
    return net, core


# ------------------------------------------------------------- single peer


def test_a_single_peer_leads_after_its_first_cycles_and_commits_its_noop() -> None:
    net = Net((1,))
    core = net.cores[1]
    batches = [net.step()[1] for _ in range(3)]
    assert core.role is Role.LEADER and core.is_ready_leader and core.leader_is_ready()
    assert core.term == 1 and net.hard[1] == HardState(1, 1)
    applied = [a for b in batches for a in b.applied]
    assert [(a.index, a.op) for a in applied] == [(1, "noop")]
    assert net.disk_log[1] == core.log.entries == [NOOP]
    assert core.replicator.commit_index == 1  # (on disk with the next write: it rides along)


def test_a_proposal_to_a_ready_leader_gets_its_entries_and_is_applied() -> None:
    """A proposal gets its entries in `proposed` (in order, of the leader's term) and
    they are applied once committed (a majority of one: at once), never in a batch
    before the one that hands them out for persisting."""
    net, core = lone()
    commands = (Noop(), *submit(at=net.now))
    batches = net.step({1: [Proposal(5, commands)]})
    (ref, entries), *_ = batches[1].proposed
    assert ref == 5 and len(batches[1].proposed) == 1
    assert [(e.term, e.index) for e in entries] == [(1, 2), (1, 3)]
    decoded = [decode_command(e.command) for e in entries]
    # the submit was placed on the lone peer's free slot: it starts in its own entry
    assert decoded[0] == commands[0] and isinstance(decoded[1], Submit)
    assert decoded[1] == replace(commands[1], place=decoded[1].place)
    placed = [(p.worker, p.incarnation) for p in decoded[1].place]
    assert placed == [(1, core.dispatcher.incarnation)]
    applied: dict[int, str] = {}
    persisted: set[int] = set()
    for _ in range(3):
        for a in batches[1].applied:
            assert a.index in persisted or a.index in {e.index for e in batches[1].entries}
            applied[a.index] = a.op
        persisted |= {e.index for e in batches[1].entries}
        batches = net.step()
    assert applied[2] == "noop" and applied[3] == "submit"
    assert core.tasks.tasks[1].kind == "echo"


def test_the_follower_a_write_came_from_hears_of_its_commit_at_once_the_other_later() -> None:
    """A proposal forwarded by follower 1 (`origin`): once it commits, the leader's next
    batch tells peer 1 the new commit index at once; peer 2 learns it with its next
    append or heartbeat (no cycle here ticks)."""
    net = settled()
    leader = the_leader(net)
    first, second = sorted(set(net.cores) - {leader.id})
    parked = submit(TaskSpec("echo", "x", delay=3600.0))  # (nothing to assign meanwhile)
    batch = net.cycle(leader.id, Proposal(7, parked, origin=first), tick=False)
    ((_, (entry,)),) = batch.proposed
    net.cycle(first, tick=False)
    net.cycle(second, tick=False)
    batch = net.cycle(leader.id, tick=False)  # its own write landed, and both replies
    assert leader.replicator.commit_index >= entry.index
    told = [to for to, m in batch.early if isinstance(m, Append) and m.commit >= entry.index]
    assert told == [first]


def test_a_proposal_to_a_follower_gets_no_entries() -> None:
    net = settled()
    follower = net.cores[1]
    last = follower.log.last_index
    batch = net.cycle(1, Proposal(9, submit()))
    assert batch.proposed == [(9, [])]
    assert follower.log.last_index == last and batch.entries == []


def test_a_proposal_before_the_noop_commits_gets_no_entries() -> None:
    """Before its first tick a lone peer is no leader yet: the proposal gets nothing."""
    net = Net((1,))
    batch = net.cycle(1, Proposal(3, submit()))
    assert batch.proposed == [(3, [])]
    assert net.cores[1].log.entries == [NOOP]  # its own no-op only


# ------------------------------------------------------------ persist before send


def _check_persisted_first(net: Net) -> int:
    """Replay every batch in order against the disk it had; returns the acks checked."""
    hard: dict[int, HardState] = {}
    log_length = dict.fromkeys(net.peers, 0)
    checked = 0
    for node_id, batch in net.batches:
        if batch.hard_state is not None:
            hard[node_id] = batch.hard_state
        if batch.entries_from is not None:
            log_length[node_id] = batch.entries_from - 1 + len(batch.entries)
        disk = hard.get(node_id, HardState())
        for to, m in batch.messages:
            if isinstance(m, CoordinatorAck) and m.granted:
                assert (m.term, to) == (disk.term, disk.voted_for), (node_id, m, disk)
                checked += 1
            elif isinstance(m, Coordinator):
                assert (m.term, node_id) == (disk.term, disk.voted_for), (node_id, m, disk)
            elif isinstance(m, AppendReply) and m.ok:
                assert m.match_index <= log_length[node_id], (node_id, m)
            if not isinstance(m, Gossip | Probe):  # a probe asks for the next term
                assert m.term <= disk.term, (node_id, m, disk)
    return checked


def test_a_vote_and_term_are_handed_out_for_persisting_before_the_ack_is_sent() -> None:
    """Persist before send: every granted `CoordinatorAck` leaves in a batch that carries
    (or follows one that carried) the term it acks in and the vote for its target; so
    does every `Coordinator`, and no message carries a term not yet persisted. Checked
    through a first election, a takeover after the leader crashed, and the bully's
    preemption when it comes back."""
    net = settled()
    assert the_leader(net).id == 3
    net.crash(3)
    assert net.run_until(lambda: (leader := net.leader()) is not None and leader.id == 2)
    net.start(3)
    assert net.run_until(lambda: (leader := net.leader()) is not None and leader.id == 3)
    assert the_leader(net).term >= 3
    assert _check_persisted_first(net) >= 4  # two acks in term 1, one each later


def test_a_vote_in_the_current_term_is_handed_out_with_its_ack() -> None:
    """Persist before send when only the vote changes (the term is already current): the
    batch that grants the ack carries the vote."""
    net = Net(up=())
    net.cores[1] = PeerCore(1, PEERS, Settings(), random.Random(1), HardState(4, None))
    claim = Coordinator(4, 2, LogPosition())
    batch = net.cycle(1, Received(net.now, claim), tick=False)
    assert sent(batch, CoordinatorAck) == [(2, CoordinatorAck(4, 1, True, LogPosition()))]
    assert batch.hard_state == HardState(4, 2)
    refused = net.cycle(1, Received(net.now, Coordinator(4, 3, LogPosition())), tick=False)
    assert sent(refused, CoordinatorAck) == [(3, CoordinatorAck(4, 1, False, LogPosition()))]
    assert refused.hard_state is None  # one vote a term


# ----------------------------------------------------------- replication terms


def test_an_append_of_a_lower_term_is_refused_by_the_election_with_the_current_term() -> None:
    """Terms of replication messages are checked by the election first: a stale leader's
    append gets `AppendReply(ok=False)` in the current term and changes nothing, even
    entries that would conflict with the log."""
    log = [Entry(4, 1, '{"op":"noop"}'), Entry(5, 2, '{"op":"noop"}')]
    net = Net(up=())
    core = net.cores[1] = PeerCore(
        1, PEERS, Settings(), random.Random(1), HardState(5, 3), 1, Log(list(log))
    )
    stale = Append(3, 2, 0, 0, (Entry(3, 1, '{"op":"noop"}'),), 1)
    batch = net.cycle(1, Received(net.now, stale), tick=False)
    assert sent(batch, AppendReply) == [(2, AppendReply(5, 1, False, 0))]
    assert core.log.entries == log and batch.entries_from is None and batch.entries == []
    assert core.term == 5 and core.leader is None and batch.hard_state is None
    assert core.replicator.commit_index == 0 and batch.applied == []


def test_a_fetch_of_a_lower_term_is_refused_with_the_current_term() -> None:
    """The same check for a new leader's fetch: the stale fetcher gets an empty chunk."""
    net = Net(up=())
    net.cores[1] = PeerCore(1, PEERS, Settings(), random.Random(1), HardState(5, 3), 1, Log([NOOP]))
    batch = net.cycle(1, Received(net.now, FetchLog(4, 2, 1)), tick=False)
    assert sent(batch, LogChunk) == [(2, LogChunk(5, 1, 1, (), 0))]


# ------------------------------------------------------------------ needs_cycle


def _quiet(batch: CoreReady) -> bool:
    return (
        batch.hard_state is None
        and batch.entries_from is None
        and not batch.messages
        and not batch.applied
        and not batch.starts
        and not batch.stops
    )


def test_what_needs_no_cycle_makes_a_cycle_do_nothing() -> None:
    """`needs_cycle` is False only for what a cycle without a tick would do nothing
    with: gossip, on any peer, and the leader's idle append reply."""
    net = settled()
    leader, follower = net.cores[3], net.cores[1]
    gossip = Gossip(2, (net.cores[2].membership.me,))
    idle_reply = AppendReply(leader.term, 1, True, leader.log.last_index)
    quiet: list[tuple[PeerCore, PeerMessage]] = [
        (leader, gossip),
        (follower, gossip),
        (leader, idle_reply),
    ]
    for core, message in quiet:
        assert not core.needs_cycle(message)
        assert _quiet(net.cycle(core.id, Received(net.now, message), tick=False)), message


def test_election_messages_need_a_cycle_and_get_their_answer_in_it() -> None:
    """Anything but gossip and an idle reply needs a cycle; the election's messages
    are answered in the very cycle they wake."""
    net = settled()
    follower = net.cores[1]
    term = follower.term
    position = LogPosition(follower.log.last_term, follower.log.last_index)
    asks: list[tuple[PeerMessage, type[Any]]] = [
        (Election(term, 1), Alive),
        (Probe(term + 1, 2, position), ProbeReply),
        (Coordinator(term, 2, position), CoordinatorAck),
    ]
    for message, answer in asks:
        target = net.cores[3] if isinstance(message, Election) else follower
        assert target.needs_cycle(message)
        batch = net.cycle(target.id, Received(net.now, message), tick=False)
        assert [to for to, _ in sent(batch, answer)] == [message.sender], message
    others: list[PeerMessage] = [
        HeartbeatAck(term, 1, True),
        Results(term, 1, ()),
        Append(term, 3, 0, 0, (), 0),
        FetchLog(term, 3, 1),
        LogChunk(term, 3, 1, (), 0),
    ]
    for message in others:
        assert follower.needs_cycle(message), message


# ------------------------------------------------------------------- execution


def test_a_completed_attempt_becomes_a_finish_entry_on_the_leader() -> None:
    """A finished attempt enters through the inbox as `Completed`; the leader proposes
    its `Finish`, and the task ends with the result parsed from the worker's JSON."""
    net, core = lone()
    net.step({1: [Proposal(1, submit(TaskSpec("echo", "x"), at=net.now))]})
    starts = [task for _ in range(10) for task in net.step()[1].starts]
    (task,) = starts
    assert (task.id, task.attempt, task.worker) == (1, 1, 1)
    net.step({1: [Completed(ResultItem(task.id, task.attempt, True, '"x"'))]})
    assert net.run_until(lambda: core.tasks.tasks[1].state == "succeeded", 1.0)
    assert core.tasks.tasks[1].result == "x"
    commands = [decode_command(e.command) for e in core.log.entries]
    assert [c.items for c in commands if isinstance(c, Finish)] == [
        (Outcome(1, 1, True, "x", 0.0),)
    ]


def test_a_followers_completed_attempt_reaches_the_leader_as_results() -> None:
    """On a follower the result goes to the leader (as `Results`), which records it."""
    net = settled()
    leader = the_leader(net)
    specs = tuple(TaskSpec("echo", n) for n in range(3))  # one for each peer
    starts: dict[int, list[Any]] = {}
    net.step({leader.id: [Proposal(1, submit(*specs, at=net.now))]})
    for _ in range(30):
        for node_id, batch in net.step().items():
            starts.setdefault(node_id, []).extend(batch.starts)
    (task,) = starts[1]
    batches = net.step({1: [Completed(ResultItem(task.id, task.attempt, True, "[1]"))]})
    assert [to for to, _ in sent(batches[1], Results)] == [leader.id]
    assert net.run_until(lambda: net.cores[1].tasks.tasks[task.id].state == "succeeded")
    assert leader.tasks.tasks[task.id].result == [1]


# ------------------------------------------------------------------------ ticks


def test_a_cycle_ticks_when_told_to_and_not_when_told_not_to() -> None:
    """`tick=True` runs the timers even when none is due; `tick=False` never does."""
    net, core = lone()
    net.now += 5.0  # every timer long due
    assert core.tick_due(net.now)
    net.cycle(1, tick=False)
    assert core.last_tick < net.now - 4.0
    net.cycle(1, tick=True)
    assert core.last_tick == net.now
    net.now += 0.001
    assert not core.tick_due(net.now)
    net.cycle(1, tick=True)
    assert core.last_tick == net.now


def test_a_cycle_left_to_choose_ticks_when_tick_due() -> None:
    """With `tick=None` the core ticks exactly when `tick_due(now)` said it would."""
    net, core = lone()
    seen = set()
    for _ in range(60):
        net.now = round(net.now + 0.007, 6)
        due, before = core.tick_due(net.now), core.last_tick
        net.cycle(1)
        assert (core.last_tick == net.now) is due and (core.last_tick != before) is due
        seen.add(due)
    assert seen == {True, False}


# ------------------------------------------------------------------ catching up


def _commit_many(net: Net, count: int) -> PeerCore:
    leader = the_leader(net)
    net.step({leader.id: [Proposal(1, tuple(Noop() for _ in range(count)))]})
    target = leader.log.last_index
    assert net.run_until(lambda: leader.replicator.commit_index == target)
    return leader


def test_a_joining_follower_shows_catching_up_and_how_far_behind_until_synced() -> None:
    """A peer that joins a cluster with a long committed log is `catching_up` while its
    log does not match its leader's, and `behind` counts the committed entries it
    lacks; both clear once it has them."""
    net = settled(up=(2, 3))
    leader = _commit_many(net, 5000)  # (more than one window of full Appends)
    joined = net.start(1)
    views: list[dict[str, Any]] = []
    while len(views) < 300 and not (views and views[-1]["leader"] and not views[-1]["catching_up"]):
        net.step()
        views.append(joined.view(net.now))
    catching = [v for v in views if v["catching_up"]]
    assert len(catching) >= 3
    assert all(v["leader"] == leader.id for v in catching)
    commit = leader.replicator.commit_index
    assert all(v["behind"] == commit - v["commit_index"] > 0 for v in catching)
    assert len({v["behind"] for v in catching}) >= 3  # counted down batch by batch
    assert views[-1]["behind"] == 0 and views[-1]["commit_index"] == commit
    assert joined.log.entries == leader.log.entries


def test_a_wiped_follower_is_caught_up_by_the_leader() -> None:
    """A follower restarted with an empty disk: the leader notices its log is gone and
    sends it everything again, until its log is the leader's committed prefix."""
    net = settled()
    leader = _commit_many(net, 700)
    assert net.run_until(net.settled)
    wiped = net.start(1, wiped=True)
    assert wiped.log.entries == []
    assert net.run_until(lambda: wiped.replicator.commit_index == leader.replicator.commit_index)
    commit = leader.replicator.commit_index
    assert wiped.log.entries[:commit] == leader.log.entries[:commit]
    assert net.disk_log[1][:commit] == leader.log.entries[:commit]
    assert not wiped.view(net.now)["catching_up"]
    net.crash(2)  # the wiped peer now counts for the majority again
    net.step({leader.id: [Proposal(2, (Noop(),))]})
    last = leader.log.last_index
    assert net.run_until(lambda: leader.replicator.commit_index == last, 1.0)
