"""A whole cluster of real `PeerCore`s in one process, on a fake clock and network.

Virtual time advances in fixed steps; each step delivers due messages into the peers'
inboxes and runs a cycle (`PeerCore.cycle`, the driver's one entry point) on every peer
the real driver would wake, and carries out its batch as the driver does: a leader's
appends leave at once, the rest waits in the peer's `WriteQueue` for the write that
covers it (the "disk" survives crashes; a slow write lands steps later while the peer
goes on cycling), and a landed write comes back to the core as `Persisted`. With
`lazy_ticks` (the default) a peer wakes, as in the driver, for a delivery it needs at
once (`needs_cycle`; other messages wait in its inbox, with their arrival time, for its
next cycle), a finished task, a landed write, a proposal, or its `next_tick`, and the
core decides whether the cycle ticks. Otherwise every step runs a ticking cycle on every
peer with every message at once. Clients may
propose commands to whichever peer is a ready leader; a command is acknowledged when
that leader applies it in the term it proposed it.
Invariants are checked after every step and raise `InvariantViolation`.

With `execute=True` the peers also run the tasks they are assigned: each start in a
peer's batch completes after a random virtual delay by `complete` on that same peer,
unless the peer crashed first (its running attempts are lost) or a stop in a later batch
cancelled it. Kinds: `echo` succeeds with its args as JSON; `sleep` succeeds after
`args["seconds"]`; `fail` fails with a message.
Every finish that takes effect on any peer is recorded per (task, attempt).

Membership: `add_peer` starts a new, empty peer that joins as a learner; `add_member`,
`remove_member` ask a ready leader for the change (a `Members` proposal). Majorities in
the checks are those of the configuration the peer checked has in force.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from election import Role
from election.messages import CoordinatorAck
from peer.protocol.commands import Command, Finish, Members, Submit, TaskSpec, decode_command
from peer.protocol.configuration import ChangeRefused, Configuration
from peer.protocol.core import PeerCore
from peer.protocol.cycle import (
    Completed,
    CoreReady,
    Hurry,
    Input,
    Persisted,
    Proposal,
    Received,
    SnapshotStored,
)
from peer.protocol.events import SnapshotInstalled
from peer.protocol.log import Entry, Log
from peer.protocol.messages import AppendReply, ResultItem
from peer.protocol.records import Applied, Task
from peer.protocol.settings import Settings
from peer.protocol.writes import WriteQueue
from tests.sim.disk import DiskFaults, SimDisk
from tests.sim.network import Faults, SimNetwork

STEP = 0.01
RUN_TIME = (0.01, 0.3)  # virtual seconds an executed task runs, uniformly


class InvariantViolation(AssertionError):
    pass


def echo_task(n: int) -> dict[str, Any]:
    return {"kind": "echo", "args": n}


class SimCluster:
    def __init__(
        self,
        size: int,
        seed: int,
        faults: Faults | None = None,
        settings: Settings | None = None,
        execute: bool = False,
        lazy_ticks: bool = True,
        disk_faults: DiskFaults | None = None,
        wall_skew: float = 0.0,
    ) -> None:
        self.ids = tuple(range(1, size + 1))
        self.founders = self.ids  # the peers of cluster.toml; later ones joined
        self.refusals: list[ChangeRefused] = []  # membership changes a leader refused
        self.lazy_ticks = lazy_ticks
        self.inbox: dict[int, list[Input]] = {}  # what waits for each peer's next cycle
        self.woken: set[int] = set()  # peers the driver would run a cycle for this step
        self.woken_next: set[int] = set()  # ... and next step (a write landed)
        self.proposal_keys: dict[int, str] = {}  # proposal ref -> the client's key
        self.majority = size // 2 + 1
        # separate streams, so a change in one (say, more network faults) leaves the
        # others' draws alone: clients and peers' generators, the network, the disks
        self.rng = random.Random(seed)
        self.disk_rng = random.Random(f"disk-{seed}")
        self.disk_faults = disk_faults or DiskFaults()
        self.disks = {i: SimDisk() for i in self.ids}
        self.writes: dict[int, WriteQueue] = {}  # per running peer, as in its driver
        self.disk_error: set[int] = set()  # peers whose last write was refused
        # per leader: (term, commit index) last checked
        self.leader_commit: dict[int, tuple[int, int]] = {}
        self.config_seen: dict[int, Configuration] = {}  # per peer: in force last step
        self.paused_until: dict[int, float] = {}
        self.skew = {i: self.rng.uniform(-wall_skew, wall_skew) for i in self.ids}
        self.acks: dict[tuple[int, int], int] = {}  # (acker, term) -> the claimant it acked
        self.entry_at: dict[tuple[int, int], tuple[str, int | None]] = {}  # log matching
        self.commit_seen: dict[int, int] = {}  # per running peer: its highest commit index
        self.produced: dict[tuple[int, int], Any] = {}  # (task, attempt) -> the result run
        self.settings = settings or Settings()
        self.execute = execute
        self.make_task: Callable[[int], dict[str, Any]] = echo_task  # spec of proposal n
        self.work: dict[int, dict[tuple[int, int], tuple[float, ResultItem]]] = {}
        self.peak_work: dict[int, int] = {}  # per peer: the most attempts it held at once
        self.outcomes: dict[tuple[int, int], tuple[bool, Any]] = {}  # recorded finishes
        self.commit_term: dict[int, int] = {}  # index -> first applier's term (>= commit term)
        self.net = SimNetwork(random.Random(f"net-{seed}"), faults)
        self.now = 0.0
        self.incarnation: dict[int, int] = dict.fromkeys(self.ids, 0)
        self.nodes: dict[int, PeerCore] = {}
        self.leaders_by_term: dict[int, int] = {}
        self.minority_since: dict[int, float] = {}
        self.last_term: dict[int, int] = dict.fromkeys(self.ids, 0)
        self.committed: dict[int, Entry] = {}  # every entry any peer applied, by index
        self.pending: dict[int, tuple[int, str, int]] = {}  # index -> (term, key, proposer)
        self.acked: set[str] = set()  # keys of commands a client saw acknowledged
        self.snapshot_at: dict[int, tuple[int, int]] = {}  # index -> (term, text's hash)
        self.snapshots_taken = 0  # snapshots stored (taken or installed), all peers
        self.installs: Counter[int] = Counter()  # per peer: snapshots installed from another
        self.proposals = 0
        for node_id in self.ids:
            self.start(node_id)

    # ------------------------------------------------------------------ faults

    def start(self, node_id: int) -> None:
        self.incarnation[node_id] += 1
        self.inbox[node_id] = []
        self.writes[node_id] = WriteQueue()
        disk = self.disks[node_id]
        self.nodes[node_id] = PeerCore(
            node_id,
            self.founders,
            self.settings,
            random.Random(self.rng.random()),
            disk.hard_state,
            self.incarnation[node_id],
            disk.stored_log(),
            disk.commit,
            amnesiac=not disk.stored,
            snapshot=disk.snapshot,
            bootstrap=self.bootstrap(node_id),
        )
        self.nodes[node_id].compaction.verify = True  # (no stale task rows reused)
        disk.stored = True

    def bootstrap(self, node_id: int) -> Configuration:
        """cluster.toml's configuration as `node_id` sees it: a peer that joined later
        lists itself as a learner."""
        urls = {p: url_of(p) for p in {*self.founders, node_id}}
        return Configuration.of(urls, () if node_id in self.founders else (node_id,))

    # ------------------------------------------------------------- membership

    def add_peer(self) -> int:
        """A new, empty peer starts (not yet a member: `add_member` asks for that)."""
        node_id = max(self.ids) + 1
        self.ids = (*self.ids, node_id)
        self.disks[node_id] = SimDisk()
        self.incarnation[node_id] = 0
        self.skew[node_id] = 0.0
        self.last_term[node_id] = 0
        self.start(node_id)
        return node_id

    def add_member(self, node_id: int) -> bool:
        return self._change(lambda c: c.with_learner(node_id, url_of(node_id)))

    def remove_member(self, node_id: int) -> bool:
        return self._change(lambda c: c.without(node_id))

    def _change(self, change: Callable[[Configuration], Configuration]) -> bool:
        """Propose a change of the configuration a ready leader has in force; False if
        there is no ready leader, or the change does not apply to its configuration."""
        ready = [i for i, n in self.nodes.items() if n.is_ready_leader]
        if not ready:
            return False
        config = self.nodes[ready[0]].configuration
        try:
            members = Members(self.now, config.index, change(config))
        except ChangeRefused:
            return False
        return self.propose_command(members)

    def voters(self, node_id: int) -> frozenset[int]:
        return self.nodes[node_id].configuration.voter_ids

    def crash(self, node_id: int) -> None:
        """SIGKILL: a write in flight landed or not, nothing of its batch was sent."""
        if self.nodes.pop(node_id, None) is not None:
            self.disks[node_id].crash(self.disk_rng)
            # a term never written was never shown to anyone: it may be forgotten
            saved = self.disks[node_id].hard_state
            self.last_term[node_id] = 0 if saved is None else saved.term
        self.work.pop(node_id, None)  # its running attempts die with it
        self.writes.pop(node_id, None)  # what waited for a write is never carried out
        self.disk_error.discard(node_id)
        self.leader_commit.pop(node_id, None)
        self.config_seen.pop(node_id, None)
        self.paused_until.pop(node_id, None)
        self.commit_seen.pop(node_id, None)

    def wipe(self, node_id: int) -> None:
        """Crash the peer and lose its disk (a replaced disk); `start` brings it back
        empty, and amnesiac."""
        self.crash(node_id)
        self.disks[node_id].wipe()
        self.last_term[node_id] = 0  # a wiped peer starts again from term 0

    def can_wipe(self, node_id: int) -> bool:
        """Whether every committed entry is on the disks of a majority without this
        peer, and the peer holds nothing beyond the commit index, so that losing its
        disk loses nothing (more loss than that, no quorum system survives). The second
        condition: a leader still counts the acknowledgements the peer gave before its
        disk was lost, until it hears the peer again; an entry the peer acknowledged but
        that was not committed yet could then commit on fewer disks than a majority."""
        commit = max((n.replicator.commit_index for n in self.nodes.values()), default=0)
        if self.disks[node_id].last_index > commit:
            return False
        if commit == 0:
            return True
        source = next(n for n in self.nodes.values() if n.replicator.commit_index == commit)
        entry = source.log.entry(commit)
        holders = {
            p
            for p, disk in self.disks.items()
            if p != node_id
            and (disk.base_index >= commit or (entry is not None and disk.holds(commit, entry)))
        }
        configs = [
            c for n in self.nodes.values() for c in (n.configuration, n.committed_configuration)
        ]
        return all(len(holders & c.voter_ids) >= c.majority() for c in configs)

    def pause(self, node_id: int, seconds: float) -> None:
        """The process stops (SIGSTOP) for `seconds`: no cycles, its inbox piles up."""
        self.paused_until[node_id] = self.now + seconds

    @property
    def up(self) -> list[int]:
        return sorted(self.nodes)

    # ------------------------------------------------------------------- time

    def step(self, propose_rate: float = 0.0) -> None:
        self.now = round(self.now + STEP, 6)
        if propose_rate and self.rng.random() < propose_rate:
            self.propose()
        for _src, dst, message in self.net.due(self.now):
            node = self.nodes.get(dst)
            if node is None:
                continue
            self.inbox[dst].append(Received(self.now, message))
            if node.needs_cycle(message):
                self.woken.add(dst)
        if self.execute:
            self._complete_due()
        for node_id in self.up:
            if self._busy(node_id):
                continue
            if not self.lazy_ticks:
                self._cycle(node_id, tick=True)
            elif node_id in self.woken or self.nodes[node_id].next_tick() <= self.now:
                self._cycle(node_id)
        self.woken, self.woken_next = self.woken_next, set()
        self.check_invariants()

    def _busy(self, node_id: int) -> bool:
        """Paused (a slow write in flight lands meanwhile, but the peer only notices
        when it runs again)."""
        if self.paused_until.get(node_id, 0.0) > self.now:
            return True
        disk = self.disks[node_id]
        if disk.writing is not None and disk.done_at <= self.now:
            disk.land()
            self._landed(node_id)
        return False

    def _cycle(self, node_id: int, tick: bool | None = None) -> None:
        """One driver cycle of a peer over its inbox; then persist, send, apply."""
        inbox, self.inbox[node_id] = self.inbox[node_id], []
        wall = self.now + self.skew[node_id]
        batch = self.nodes[node_id].cycle(self.now, wall, inbox, tick)
        self._carry_out(node_id, batch)

    def run(self, seconds: float, propose_rate: float = 0.0) -> None:
        for n in range(round(seconds / STEP)):
            self.step(propose_rate)
            if propose_rate and n % 25 == 0:
                self.check_logs()

    def run_until(self, condition, seconds: float) -> bool:  # type: ignore[no-untyped-def]
        for _ in range(round(seconds / STEP)):
            if condition():
                return True
            self.step()
        return bool(condition())

    def propose(self) -> None:
        """A client submits one command to a ready leader, if there is one; it goes in
        at the leader's next cycle (this step), as a client write does in the driver."""
        ready = [i for i, n in self.nodes.items() if n.is_ready_leader]
        if not ready:
            return
        leader = self.rng.choice(ready)
        self.proposals += 1
        key = f"k{self.proposals}"
        spec = TaskSpec.from_json({**self.make_task(self.proposals), "key": key})
        self.proposal_keys[self.proposals] = key
        self.inbox[leader].append(Proposal(self.proposals, (Submit(self.now, (spec,)),)))
        others = [i for i in self.nodes if i != leader]
        if others and self.rng.random() < 0.3:  # a read on a follower that forwarded
            self.inbox[leader].append(Hurry(self.rng.choice(others)))
        self.woken.add(leader)

    def propose_command(self, command: Command) -> bool:
        """A client write of one command (a schedule put, say) to a ready leader; it is
        acknowledged under the key `cmd<n>` when applied there in its term."""
        ready = [i for i, n in self.nodes.items() if n.is_ready_leader]
        if not ready:
            return False
        leader = self.rng.choice(ready)
        self.proposals += 1
        self.proposal_keys[self.proposals] = f"cmd{self.proposals}"
        self.inbox[leader].append(Proposal(self.proposals, (command,)))
        self.woken.add(leader)
        return True

    def _carry_out(self, node_id: int, batch: CoreReady) -> None:
        """As the driver does: a leader's appends leave now (unless its disk refused
        the last write); the rest waits for the write that covers it; then the next
        write starts if none is in flight."""
        for ref, refusal in batch.refused:
            self.proposal_keys.pop(ref)
            self.refusals.append(refusal)
        for ref, entries in batch.proposed:
            key = self.proposal_keys.pop(ref)
            for entry in entries:
                self.pending[entry.index] = (entry.term, key, node_id)
        self._check_entries(node_id, batch)
        self._check_snapshot(node_id, batch)
        if node_id in self.disk_error:
            batch.messages[:0], batch.early = batch.early, []
        self._send(node_id, batch.early)
        for released in self.writes[node_id].add(batch):
            self._deliver(node_id, released)
        write = self.writes[node_id].take_write(self.nodes[node_id].log)
        if write is None:
            return
        disk = self.disks[node_id]
        outcome = disk.begin(self.now, write, self.disk_rng, self.disk_faults)
        if outcome == "refused":
            self.writes[node_id].refused()
            self.disk_error.add(node_id)
        elif outcome == "done":
            self._landed(node_id)

    def _landed(self, node_id: int) -> None:
        """The peer's write landed: what waited for it goes out, the core hears of it
        at its next cycle (which this wakes)."""
        self.disk_error.discard(node_id)
        queue = self.writes[node_id]
        write = queue.in_flight
        assert write is not None
        last = write.last_entry
        if last is not None:
            self.inbox[node_id].append(Persisted(last.index, last.term))
        if write.snapshot is not None:
            self.inbox[node_id].append(SnapshotStored(write.snapshot.snapshot.index))
        if last is not None or write.snapshot is not None:
            self.woken.add(node_id)  # (this step, unless it already cycled: then the next)
            self.woken_next.add(node_id)
        for batch in queue.landed():
            self._deliver(node_id, batch)

    def _send(self, node_id: int, messages: list[tuple[int, Any]]) -> None:
        for to, message in messages:
            self._check_sent(node_id, to, message)
            self.net.send(self.now, node_id, to, message)

    def _deliver(self, node_id: int, batch: CoreReady) -> None:
        self._send(node_id, batch.messages)
        node = self.nodes[node_id]
        for applied in batch.applied:
            entry = node.log.entry(applied.index)
            if entry is None:  # a snapshot installed since replaced it (checked there)
                continue
            self._check_applied(node_id, entry)
            self.commit_term.setdefault(applied.index, node.term)
            proposed = self.pending.get(applied.index)
            if proposed and (proposed[0], proposed[2]) == (entry.term, node_id):
                self.acked.add(proposed[1])  # the proposer applied it, of the term proposed
            if applied.op == "finish":
                self._record_finish(node_id, applied, entry)
                self._check_results(node_id, node, applied)
        if self.execute:
            self._run_work(node_id, batch)

    # -------------------------------------------------------------- execution

    def _run_work(self, node_id: int, batch: CoreReady) -> None:
        work = self.work.setdefault(node_id, {})
        for key in batch.stops:
            work.pop(key, None)
        for task in batch.starts:
            if task.kind == "sleep":
                due = self.now + float(task.args["seconds"])
            else:
                due = self.now + self.rng.uniform(*RUN_TIME)
            work[(task.id, task.attempt)] = (due, _run(task))
        self.peak_work[node_id] = max(self.peak_work.get(node_id, 0), len(work))

    def _complete_due(self) -> None:
        """Complete the work that is due; a finished attempt wakes its peer's driver."""
        for node_id in self.up:
            work = self.work.get(node_id, {})
            for key, (due, item) in sorted(work.items()):
                if due <= self.now:
                    del work[key]
                    if item.ok:
                        self.produced[key] = orjson.loads(item.value)
                    self.inbox[node_id].append(Completed(item))
                    self.woken.add(node_id)

    def _record_finish(self, node_id: int, applied: Applied, entry: Entry) -> None:
        """Remember the outcome of each attempt a finish ended; never two different."""
        command = decode_command(entry.command)
        assert isinstance(command, Finish)
        items = {}
        for item in command.items:
            items.setdefault(item.task, item)
        for task_id in applied.task_ids:
            attempt, ok, value = items[task_id].attempt, items[task_id].ok, items[task_id].value
            first = self.outcomes.setdefault((task_id, attempt), (ok, value))
            if first != (ok, value):
                raise InvariantViolation(
                    f"t={self.now}: peer {node_id} recorded task {task_id} attempt {attempt} "
                    f"as {(ok, value)}, another peer as {first}"
                )

    def _check_sent(self, node_id: int, to: int, message: Any) -> None:
        """An append's acknowledgement leaves only once what it acknowledges is on
        disk. A granted ack: at most one claimant per acker and term, ever (wipes
        included), and its vote on disk before the ack leaves."""
        held = self.disks[node_id].last_index
        if isinstance(message, AppendReply) and message.ok and held < message.match_index:
            raise InvariantViolation(
                f"t={self.now}: peer {node_id} acknowledged entries up to "
                f"{message.match_index} with {held} on disk"
            )
        if not isinstance(message, CoordinatorAck) or not message.granted:
            return
        first = self.acks.setdefault((node_id, message.term), to)
        if first != to:
            raise InvariantViolation(
                f"t={self.now}: peer {node_id} acked {first} and {to} in term {message.term}"
            )
        saved = self.disks[node_id].hard_state  # (a newer term on disk supersedes the vote)
        newer = saved is not None and saved.term > message.term
        if not newer and (saved is None or (saved.term, saved.voted_for) != (message.term, to)):
            raise InvariantViolation(
                f"t={self.now}: peer {node_id} acked {to} in term {message.term} with "
                f"{saved} on disk"
            )

    def _check_entries(self, node_id: int, batch: CoreReady) -> None:
        """Log matching, entry by entry as peers write them: one command and one
        previous term for each (index, term), on every peer."""
        log = self.nodes[node_id].log
        for entry in batch.entries:
            seen = (entry.command, log.term_at(entry.index - 1))
            first = self.entry_at.setdefault((entry.index, entry.term), seen)
            if first != seen:
                raise InvariantViolation(
                    f"t={self.now}: peer {node_id} holds another entry at {entry.index} "
                    f"of term {entry.term} than a peer before it: logs do not match"
                )

    def _check_snapshot(self, node_id: int, batch: CoreReady) -> None:
        """Snapshots of one index are the same text on every peer, whoever took or
        installed them (the table is deterministic, and so is its codec)."""
        if batch.snapshot is None:
            return
        snapshot = batch.snapshot.snapshot
        self.snapshots_taken += 1
        if any(isinstance(e, SnapshotInstalled) for e in batch.events):
            self.installs[node_id] += 1
        first = self.snapshot_at.setdefault(snapshot.index, (snapshot.term, hash(snapshot.data)))
        if first != (snapshot.term, hash(snapshot.data)):
            raise InvariantViolation(
                f"t={self.now}: peer {node_id} stores another snapshot at {snapshot.index} "
                "than a peer before it"
            )
        committed = self.committed.get(snapshot.index)
        if committed is not None and committed.term != snapshot.term:
            raise InvariantViolation(
                f"t={self.now}: peer {node_id} snapshot at {snapshot.index} is of term "
                f"{snapshot.term}, the entry committed there of {committed.term}"
            )

    def _check_applied(self, node_id: int, entry: Entry) -> None:
        first = self.committed.setdefault(entry.index, entry)
        if first != entry:
            raise InvariantViolation(
                f"t={self.now}: peer {node_id} applied {entry} at {entry.index}, "
                f"another peer applied {first}"
            )

    def check_logs(self) -> None:
        """Log matching, and leader completeness: a serving leader of term T holds every
        entry committed in terms up to T. (A deposed leader cut off from its successor
        serves until it notices, at most the failure timeout, and lacks what the
        successor has committed since; Raft allows that, and terms fence it.)"""
        for node_id, node in self.nodes.items():
            if node.is_ready_leader:
                for index, entry in self.committed.items():
                    if self.commit_term[index] > node.term or index <= node.log.base_index:
                        continue  # (compacted: its snapshot is checked when stored)
                    if node.log.term_at(index) != entry.term:
                        raise InvariantViolation(
                            f"t={self.now}: leader {node_id} lacks committed entry {index}"
                        )
        logs = [(i, n.log) for i, n in self.nodes.items()]
        for a, log_a in logs:
            for b, log_b in logs:
                if a < b:
                    self._check_matching(a, log_a, b, log_b)

    def _check_matching(self, a: int, log_a: Log, b: int, log_b: Log) -> None:
        top = min(log_a.last_index, log_b.last_index)
        low = max(log_a.base_index, log_b.base_index)  # (both hold entries after it)
        same = next((i for i in range(top, low, -1) if log_a.term_at(i) == log_b.term_at(i)), low)
        held_a = [log_a.entry(i) for i in range(low + 1, same + 1)]
        if held_a != [log_b.entry(i) for i in range(low + 1, same + 1)]:
            raise InvariantViolation(f"t={self.now}: logs of {a} and {b} break log matching")

    # ------------------------------------------------------------- invariants

    def leaders(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.role is Role.LEADER]

    def component(self, node_id: int) -> set[int]:
        """Running peers reachable from `node_id` over uncut links (both directions)."""
        return {p for p in self.up if p == node_id or self.net.connected(node_id, p)}

    def check_invariants(self) -> None:
        for node_id, node in self.nodes.items():
            term = node.election.term
            if term < self.last_term[node_id]:
                raise InvariantViolation(f"t={self.now}: peer {node_id} term went backwards")
            self.last_term[node_id] = term
            known_before = self.commit_seen.get(node_id, 0)
            self._check_committed_prefix(node_id, node)
            self._check_commit_is_durable(node_id, node, known_before)
            self._check_configuration(node_id, node)
            if self.execute:
                self._check_attempts(node_id, node)
        for leader in self.leaders():
            term = self.nodes[leader].election.term
            holder = self.leaders_by_term.setdefault(term, leader)
            if holder != leader:
                raise InvariantViolation(
                    f"t={self.now}: two leaders in term {term}: {holder} and {leader}"
                )
        self._check_minority_has_no_leader()

    def _check_committed_prefix(self, node_id: int, node: PeerCore) -> None:
        """A peer's commit index never moves back while it runs, and what it holds at
        its commit index is what was committed there: the committed prefix never
        changes, on any peer, at any step."""
        commit = node.replicator.commit_index
        if commit < self.commit_seen.get(node_id, 0):
            raise InvariantViolation(f"t={self.now}: peer {node_id} commit index went back")
        self.commit_seen[node_id] = commit
        committed = self.committed.get(commit)
        if committed is not None and node.log.term_at(commit) != committed.term:
            raise InvariantViolation(
                f"t={self.now}: peer {node_id} lost or replaced committed entry {commit}"
            )

    def _check_commit_is_durable(self, node_id: int, node: PeerCore, known_before: int) -> None:
        """A leader moves its commit index only to an entry a majority holds on disk
        (its own disk counts only once its write landed): a majority of the voters in
        force when it moved, those of the step before or of this one."""
        before = self.config_seen.get(node_id)
        self.config_seen[node_id] = config = node.configuration
        commit = node.replicator.commit_index
        if not node.replicator.leading:
            return
        term, checked = self.leader_commit.get(node_id, (0, 0))
        self.leader_commit[node_id] = (node.term, commit)
        if term != node.term:  # new in the lead: what it knew committed before was checked
            checked = known_before
        if commit <= checked:
            return
        entry = node.log.entry(commit)
        if entry is None:
            return  # (a snapshot installed at its commit index: committed before)
        holders = {p for p, disk in self.disks.items() if disk.holds(commit, entry)}
        if all(len(holders & c.voter_ids) < c.majority() for c in (config, before or config)):
            raise InvariantViolation(
                f"t={self.now}: leader {node_id} committed {commit} with it on the disks "
                f"of {holders} only"
            )

    def _check_configuration(self, node_id: int, node: PeerCore) -> None:
        """A ready leader has at most one configuration change uncommitted, and votes
        in its committed configuration unless its own removal is that change."""
        if not node.is_ready_leader:
            return
        pending = node.configs.pending
        if len(pending) > 1:
            raise InvariantViolation(
                f"t={self.now}: leader {node_id} has {len(pending)} changes uncommitted"
            )
        if node_id not in node.committed_configuration.voter_ids and not pending:
            raise InvariantViolation(f"t={self.now}: leader {node_id} leads, removed")

    def _check_results(self, node_id: int, node: PeerCore, applied: Applied) -> None:
        """A succeeded task holds what its current attempt produced (results differ
        per attempt here, so a finish recorded for the wrong attempt shows)."""
        for task_id in applied.task_ids:
            task = node.tasks.tasks.get(task_id)
            if task is None or task.trimmed:  # retention dropped it, or its result
                continue
            made = self.produced.get((task_id, task.attempt))
            if task.state == "succeeded" and made is not None and task.result != made:
                raise InvariantViolation(
                    f"t={self.now}: peer {node_id} task {task_id} attempt {task.attempt} "
                    f"holds {task.result!r}, that attempt produced {made!r}"
                )

    def _check_attempts(self, node_id: int, node: PeerCore) -> None:
        for task in node.tasks.tasks.values():
            if task.attempt > task.max_attempts:
                raise InvariantViolation(
                    f"t={self.now}: peer {node_id} task {task.id} is on attempt "
                    f"{task.attempt} of {task.max_attempts}"
                )

    def _check_minority_has_no_leader(self) -> None:
        # A leader steps down once the peers it heard from within `failure_timeout` are no
        # longer a majority. When partitions shift, acks heard just before a cut still
        # count for that long, so the bound is two failure timeouts plus message slack.
        grace = 2 * self.settings.failure_timeout + 3 * self.settings.heartbeat_interval
        # an ack held up in the network for seconds still counts as a fresh ack when it
        # arrives (a leader cannot tell), so long delays lengthen the bound by as much
        faults = self.net.faults
        if faults.long_delay or faults.replay:
            grace += faults.long_max
        for node_id in self.up:
            paused = self.paused_until.get(node_id, 0.0) > self.now
            config = self.nodes[node_id].configuration
            seen = len(self.component(node_id) & config.voter_ids)
            if paused or seen >= config.majority():
                # a paused peer cannot step down until it runs again: its grace starts then
                self.minority_since.pop(node_id, None)
                continue
            since = self.minority_since.setdefault(node_id, self.now)
            if self.nodes[node_id].role is Role.LEADER and self.now - since > grace:
                raise InvariantViolation(
                    f"t={self.now}: peer {node_id} leads from a minority since t={since}"
                )

    def agreed_on_highest(self, among: Iterable[int] | None = None) -> bool:
        """Every running peer follows the highest running id, which leads."""
        live = sorted(among if among is not None else self.up)
        if len(live) < self.majority:
            return not self.leaders()
        top = live[-1]
        if self.nodes[top].role is not Role.LEADER:
            return False
        return all(self.nodes[p].leader == top for p in live)


def url_of(node_id: int) -> str:
    return f"sim://{node_id}"


def _run(task: Task) -> ResultItem:
    """What running `task` produces (the simulator's task registry)."""
    if task.kind == "echo":  # each attempt's result differs: [args, attempt]
        result = [task.args, task.attempt]
        return ResultItem(task.id, task.attempt, True, orjson.dumps(result).decode())
    if task.kind == "sleep":
        slept = {"slept": task.args["seconds"]}
        return ResultItem(task.id, task.attempt, True, orjson.dumps(slept).decode())
    if task.kind == "fail":
        message = task.args.get("message", "failed") if isinstance(task.args, dict) else "failed"
        return ResultItem(task.id, task.attempt, False, str(message))
    return ResultItem(task.id, task.attempt, False, f"unknown task kind {task.kind!r}")
