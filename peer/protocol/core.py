"""One peer's protocol core: membership, election, replication and the task table
wired together, still pure.

`PeerCore` is what both the real driver (`peer.runtime.node`) and the simulator
(`tests/sim`) run, through one entry point: `cycle(now, wall, inbox)` takes what arrived
since the last cycle (messages with their arrival time, proposals, finished attempts),
ticks the timers when they are due, and returns one `CoreReady` batch: state and
entries to persist, messages to send, entries applied, attempts to start and stop,
events to report, and the entries each proposal got. Terms of replication messages are
checked here, by the election, before the replicator sees them. The election's
`Heartbeat` leaves as an `Append`. No I/O, clock or global random.

Gossip rides on replication while a leader is heard: the leader beats with its
heartbeats (to everyone, in the same batch, so the same frame), and a follower beats in
answer to the leader's appends, to the leader only; the others learn of it from the
leader's digest. A follower that stops hearing the leader falls back to gossiping with
everyone on its own timer (`RELAY_SLACK` heartbeats later), well before anyone could be
held suspect. At idle a follower then sends and receives one frame per heartbeat.

Membership changes (Raft's single-server changes, `peer.protocol.configuration`): the
configuration in force is the latest in the log (`ConfigLog`); election, replication
and gossip follow it. A ready leader proposes a `Members` entry only over a committed
configuration, so one change is under way at a time; a joining peer is a learner until
its log has caught up, and then the leader promotes it. A new leader serves only if its
claim holds under the configuration its synced log ends with. A leader that is removed
goes on until its removal is committed, then resigns.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from election import BullyElection, HardState, Heartbeat, LogPosition, Role
from election.messages import Envelope
from peer.protocol.commands import (
    Assign,
    Command,
    Members,
    SchedulePut,
    ScheduleSpec,
    Submit,
    encode_command,
)
from peer.protocol.compaction import Compaction
from peer.protocol.config_log import ConfigLog
from peer.protocol.configuration import ChangeRefused, Configuration
from peer.protocol.cycle import (
    Completed,
    CoreReady,
    Hurry,
    Input,
    Persisted,
    Received,
    SnapshotStored,
)
from peer.protocol.dispatch import Dispatcher, WorkOrders
from peer.protocol.events import (
    CoreEvent,
    PeerRestarted,
    SnapshotInstalled,
    SnapshotRefused,
)
from peer.protocol.log import Entry, Log
from peer.protocol.membership import Gossip, MembershipTable, Status
from peer.protocol.messages import (
    Append,
    AppendReply,
    FetchLog,
    LogChunk,
    PeerMessage,
    ReplicationMessage,
    ResultItem,
    Results,
    SnapshotChunk,
    SnapshotReply,
)
from peer.protocol.reconfiguration import Reconfiguration
from peer.protocol.records import TERMINAL, Applied
from peer.protocol.replication import Replicator
from peer.protocol.retention import Retention
from peer.protocol.scheduler import Scheduler, Worker
from peer.protocol.schedules import TickPlanner
from peer.protocol.settings import Settings
from peer.protocol.snapshot import Snapshot, SnapshotError, decode_table
from peer.protocol.tasks import TaskTable
from peer.protocol.view import describe

RELAY_SLACK = 1.5  # heartbeats without a relayed beat before gossiping with everyone
TICK_SLACK = 1.5  # heartbeats between two ticks at most (a later one than the leader's)


class PeerCore(Reconfiguration):
    def __init__(
        self,
        node_id: int,
        peers: Iterable[int],
        settings: Settings,
        rng: random.Random,
        hard_state: HardState | None = None,
        incarnation: int = 1,
        log: Log | None = None,
        commit_index: int = 0,
        amnesiac: bool = False,
        declared_schedules: Iterable[ScheduleSpec] = (),
        snapshot: Snapshot | None = None,
        bootstrap: Configuration | None = None,
    ) -> None:
        """`amnesiac`: this peer starts with no stored state at all (new, or its disk
        was wiped), so it cannot know whom it acked before: see `BullyElection`.
        `snapshot`: the stored one the log's base was compacted into (the table starts
        from it, and the committed entries after it are applied again). `bootstrap`:
        the configuration before any `Members` entry (default: `peers` all vote); a
        peer joining a running cluster lists itself as a learner there."""
        peers = tuple(peers)
        if bootstrap is None:
            bootstrap = Configuration.of({p: "" for p in {*peers, node_id}})
        self.id = node_id
        self.settings = settings
        self.membership = MembershipTable(
            node_id, peers, incarnation, settings.membership_timings(), rng
        )
        self.election = BullyElection(
            node_id, peers, settings.election_timings(), rng, hard_state, amnesiac=amnesiac
        )
        self.log = log or Log()
        self.replicator = Replicator(
            node_id,
            peers,
            self.log,
            min(commit_index, self.log.last_index),
            settings.max_batch,
            resend_after=settings.failure_timeout / 2,
            snapshot=snapshot,
            chunk_size=settings.snapshot_chunk,
            max_bytes=settings.max_append_bytes,
        )
        queues = dict(settings.queues)
        self.tasks = TaskTable(queues) if snapshot is None else decode_table(snapshot.data, queues)
        scheduler = Scheduler(
            settings.policy,
            settings.slots,
            rng,
            settings.retry_base,
            settings.retry_max,
            settings.prefetch,
            queues,
            settings.priority_aging,
            settings.prefetch_below,
        )
        self.dispatcher = Dispatcher(node_id, incarnation, scheduler)
        self.retention = Retention(settings)
        self.ticks = TickPlanner(settings.max_catch_up)
        self.declared_schedules = tuple(declared_schedules)
        self._serving_since: float | None = None
        self._next_resend = 0.0
        self._last_tick = float("-inf")
        self._ticked = False
        self._wall = 0.0
        self._now = 0.0
        self._out: list[tuple[int, PeerMessage]] = []
        self._own: dict[int, tuple[str, Command]] = {}  # index -> (text, command) proposed
        self._events: list[CoreEvent] = []
        self.compaction = Compaction(settings)
        self._installed_orders = WorkOrders()  # after a snapshot replaced the table
        self._persisted_commit = self.replicator.commit_index
        self._published: tuple[str, int, int | None, int, int] | None = None
        self.configs = ConfigLog(bootstrap)
        self.replicator.confirm = self._confirm_claim
        self._in_force: Configuration | None = None
        self._urls_heard: dict[int, str] = {}  # non-members' own urls, from their gossip
        self.addresses_version = 0  # grows whenever `addresses()` may have changed
        for entry in self.replicator.take_committed():  # replay what is known committed
            self._apply(entry)
        self._follow_configuration()

    # ------------------------------------------------------------------ cycle

    def cycle(
        self, now: float, wall: float, inbox: Sequence[Input], tick: bool | None = None
    ) -> CoreReady:
        """One driver cycle: take the inbox in order, tick the timers when they are due
        (`tick_due`; `tick` forces the choice), and return the batch to carry out."""
        proposed, refused = [], []
        self.replicator.hold_sends()  # (one Append per follower for all of it: `ready`)
        for item in inbox:
            if isinstance(item, Received):
                self.receive(item.at, item.message)
            elif isinstance(item, Completed):
                self.complete(now, item.item)
            elif isinstance(item, Persisted):
                self.replicator.persisted(now, item.index, item.term)
            elif isinstance(item, SnapshotStored):
                self._snapshot_stored(item.index)
            elif isinstance(item, Hurry):
                self.replicator.hurry(now, item.peer)
            else:
                try:
                    entries = self.propose(now, list(item.commands), item.origin)
                except ChangeRefused as exc:
                    refused.append((item.ref, exc))
                    continue
                proposed.append((item.ref, entries))
        if self.tick_due(now) if tick is None else tick:
            self.tick(now, wall)
        else:
            self.advance(now, wall)
        batch = self.ready()
        batch.proposed, batch.refused = proposed, refused
        return batch

    # ------------------------------------------------------------------ inputs

    def advance(self, now: float, wall: float | None = None) -> None:
        """Move the clocks without running timers; `wall` is the clock written into
        entries and compared with tasks' `not_before` (default: `now`). The driver
        calls it every cycle it does not tick: a stale wall clock would hold back a task
        that is due."""
        self._now, self._wall = now, now if wall is None else wall

    def tick(self, now: float, wall: float | None = None) -> None:
        """Advance the clocks and run the timers."""
        self.advance(now, wall)
        self._last_tick = now
        self._ticked = True  # the leader's next round judges running attempts
        self._sync_log()
        self.election.tick(now, self.membership.live(now))
        self._sync_roles()
        self._publish_local()
        self._out.extend(self.membership.tick(now))

    def next_tick(self) -> float:
        """When `tick` must run next, at the latest: the election's and membership's next
        timer, a leader's next delayed task or retry, and every `TICK_SLACK` heartbeats
        for the rest (resends, timeouts). A steady leader so ticks once a heartbeat, a
        steady follower whenever its leader's heartbeat arrives (the driver ticks along
        with it), a peer in an election five times a heartbeat. Ticking more often is
        harmless."""
        at_least = self._last_tick + TICK_SLACK * self.settings.heartbeat_interval
        soonest = min(at_least, self.election.next_timer(), self.membership.next_beat)
        if self.is_ready_leader:  # a delayed task, a retry or a schedule's tick: on time
            releases = (
                self.dispatcher.scheduler.next_release(),
                self.ticks.next_release(self.tasks.schedules),
            )
            for release in releases:
                if release is not None:
                    soonest = min(soonest, self._now + max(0.0, release - self._wall))
        return soonest

    def receive(self, now: float, message: PeerMessage) -> None:
        self._now = now
        self._sync_log()
        if isinstance(message, Gossip):
            for peer in self.membership.merge(now, message):
                self._events.append(PeerRestarted(peer))
            self._hear_url(message)
        elif isinstance(
            message, Append | AppendReply | FetchLog | LogChunk | SnapshotChunk | SnapshotReply
        ):
            self._receive_replication(now, message)
            received = self.replicator.take_received()
            if received is not None:
                self._install(*received)
            self._follow_configuration()
        elif isinstance(message, Results):
            self.election.observe_term(now, message.term)
            if self.is_ready_leader and message.term == self.term:
                self.dispatcher.accept(self._wall, self.tasks, message.sender, list(message.items))
        else:
            self.election.step(now, message)
        self._sync_roles()

    def tick_due(self, now: float) -> bool:
        """Whether a cycle at `now` should tick: a timer is due (`next_tick`), or half a
        heartbeat has passed since the last tick (so a steady follower's ticks ride on
        the cycles its leader's heartbeats bring)."""
        since = now - self._last_tick
        return now >= self.next_tick() or since >= self.settings.heartbeat_interval / 2

    def needs_cycle(self, message: PeerMessage) -> bool:
        """Whether `message` could make this peer send, persist or apply anything before
        its next tick. Gossip cannot (membership is read on ticks), nor can the usual
        reply to an idle heartbeat; the driver lets those wait for the next cycle (on a
        leader, its next heartbeat) instead of running a cycle for each."""
        if isinstance(message, Gossip):
            return False
        if isinstance(message, AppendReply):
            return self.replicator.reply_is_news(message)
        return True

    def propose(
        self, now: float, commands: list[Command], origin: int | None = None
    ) -> list[Entry]:
        """Append commands to the log; empty unless this peer is a ready leader. The
        peer `origin` names, if any, hears of the commit at once."""
        self._now = now
        if not self.is_ready_leader:
            return []
        if any(isinstance(c, Members) for c in commands):
            return self._propose_members(commands)
        return self._propose(commands, () if origin is None else (origin,))

    def _propose(self, commands: list[Command], notify: Iterable[int] = ()) -> list[Entry]:
        """Encode and append `commands`; each is kept typed until applied here, so the
        leader does not decode what it has just encoded (`_apply`). A submit places what
        can start at once (`Dispatcher.place`); those workers hear of the commit at once."""
        placing = self._serving_since is not None and any(map(self.dispatcher.may_place, commands))
        if placing:
            workers = self._assignable()
            commands = [
                self.dispatcher.place(self.tasks, workers, c) if type(c) is Submit else c
                for c in commands
            ]
            notify = {*notify, *(p.worker for c in commands if type(c) is Submit for p in c.place)}
        texts = [encode_command(c) for c in commands]
        entries = self.replicator.propose(self._now, texts, notify)
        for entry, command in zip(entries, commands, strict=True):
            self._own[entry.index] = (entry.command, command)
            if placing and type(command) is Submit and command.place:
                self.dispatcher.reserve(entry.index, command)
        return entries

    def _apply(self, entry: Entry) -> Applied:
        """Apply a committed entry: the typed command this leader proposed for it if
        that very text is what committed there, else the decoded text (the codec
        round-trips every command exactly: tests/test_commands.py)."""
        self.tasks.log_bytes += len(entry.command)
        own = self._own.pop(entry.index, None)
        if own is not None and own[0] is entry.command:
            return self.tasks.apply_typed(entry.index, own[1])
        return self.tasks.apply(entry.index, entry.command)

    def complete(self, now: float, item: ResultItem) -> None:
        """This peer finished running an attempt (ok or not)."""
        self._now = now
        self.dispatcher.complete(item)

    def _receive_replication(self, now: float, message: ReplicationMessage) -> None:
        if isinstance(message, Append):
            if self.election.leader_contact(now, message.term, message.sender):
                self.replicator.on_append(message)
                self._beat_with_reply(message.sender)
            else:
                reply = AppendReply(self.election.term, self.id, False, 0)
                self._out.append((message.sender, reply))
        elif isinstance(message, AppendReply):
            self.election.leader_ack(now, message.term, message.sender, message.ok)
            self.replicator.on_append_reply(now, message)
        elif isinstance(message, FetchLog):
            if self.election.leader_contact(now, message.term, message.sender):
                self.replicator.on_fetch(message)
            else:
                refusal = LogChunk(self.election.term, self.id, message.from_index, (), 0)
                self._out.append((message.sender, refusal))
        elif isinstance(message, SnapshotChunk):
            self._receive_part(now, message)
        elif isinstance(message, SnapshotReply):
            self.election.leader_ack(now, message.term, message.sender, True)
            self.replicator.on_snapshot_reply(now, message)
        else:
            self.election.observe_term(now, message.term)
            self.replicator.on_log_chunk(now, message)
            if self.replicator.sync_lost:  # its best acker lost its log: elect again
                self.election.resign()

    def _receive_part(self, now: float, message: SnapshotChunk) -> None:
        """A part of a snapshot: the answer to this new leader's log fetch, or its
        leader's, sent because it lacks entries the leader compacted."""
        if self.replicator.leading and message.sender == self.replicator.sync_from:
            self.election.observe_term(now, message.term)
            self.replicator.on_sync_part(now, message)
        elif self.election.leader_contact(now, message.term, message.sender):
            self.replicator.on_snapshot_chunk(message)
        else:
            reply = AppendReply(self.election.term, self.id, False, 0)
            self._out.append((message.sender, reply))

    # -------------------------------------------------------------- snapshots

    def _snapshot_stored(self, index: int) -> None:
        """A snapshot's write landed: an own one cuts the log now."""
        write = self.compaction.stored(index)
        if write is not None:
            self.replicator.compacted(write.snapshot, write.base_index)

    def _install(self, snapshot: Snapshot, sender: int) -> None:
        """A snapshot received whole from `sender`: the table becomes what it holds, the
        log starts after it, and it is stored with the next write."""
        try:
            table = decode_table(snapshot.data, dict(self.settings.queues))
        except SnapshotError as exc:
            self._events.append(SnapshotRefused(snapshot.index, sender, str(exc)))
            return
        self.replicator.install(snapshot, sender)
        if self.replicator.applied_index != snapshot.index:
            return  # (it was not needed after all)
        self.tasks = table
        self._own.clear()
        self.compaction.installed(snapshot)
        orders = self.dispatcher.installed(table)
        self._installed_orders.starts += orders.starts
        self._installed_orders.stops += orders.stops
        self._events.append(SnapshotInstalled(snapshot.index, sender))

    def ready(self) -> CoreReady:
        out = self.election.ready()
        batch = CoreReady(hard_state=out.hard_state, events=[*self._events, *out.events])
        self._sync_roles()
        for entry in self.replicator.take_committed():
            before = self.tasks.log_bytes
            batch.applied.append(self._apply(entry))
            if self.compaction.due(entry, before, self.tasks.log_bytes, len(self.tasks.tasks)):
                self.compaction.take(self.tasks, entry, self.log)
        if self._own and not self.replicator.leading:
            self._own.clear()  # what it proposed and did not commit is another's now
        if batch.applied:
            self._applied_configuration()
        orders = self.dispatcher.on_applied(self.tasks, batch.applied, self.is_ready_leader)
        self.retention.applied(batch.applied)
        installed, self._installed_orders = self._installed_orders, WorkOrders()
        batch.starts = installed.starts + orders.starts
        batch.stops = installed.stops + orders.stops
        self._send_results()
        if self.is_ready_leader:
            self._lead_round()
        beats = self._send_election(out.messages, batch)
        self.replicator.flush(self._now)
        for to, message in self.replicator.take_messages():
            early = isinstance(message, Append) and self.replicator.leading
            (batch.early if early else batch.messages).append((to, message))
        batch.messages += self._out
        if beats:  # the leader's gossip goes with its heartbeats
            self._publish_local()
            batch.messages += self.membership.beat(self._now, beats, self._relay_slack())
        persist = self.replicator.take_persist()
        if persist is not None:
            batch.entries_from, batch.entries = persist
        batch.snapshot = self.compaction.take_write()
        durable_write = persist is not None or batch.hard_state is not None
        if durable_write and self.replicator.commit_index != self._persisted_commit:
            batch.commit_index = self._persisted_commit = self.replicator.commit_index
        self._out, self._events = [], []
        return batch

    def _send_election(self, messages: list[Envelope], batch: CoreReady) -> list[int]:
        """The election's messages into `batch`; its heartbeats leave as the replicator's
        Appends. Returns the peers beaten."""
        beats = []
        for envelope in messages:
            if isinstance(envelope.message, Heartbeat) and self.replicator.leading:
                self.replicator.heartbeat(self._now, envelope.to)
                beats.append(envelope.to)
            else:
                batch.messages.append((envelope.to, envelope.message))
        source = self.replicator.sync_from
        if beats and source is not None and source not in beats:
            # the log being synced brought a configuration without its source: the fetch
            # is still resent with each heartbeat (a lost one would stall the sync)
            self.replicator.heartbeat(self._now, source)
        return beats

    def _beat_with_reply(self, leader: int) -> None:
        """A follower heard its leader: gossip goes with the reply, at most twice a beat,
        and the own timer waits (else it could keep firing just before each append)."""
        if self.membership.since_beat(self._now) < self.settings.heartbeat_interval / 2:
            self.membership.defer(self._now + self._relay_slack())
            return
        self._publish_local()
        # its own digest is all the leader lacks: it hears everyone else itself
        beat = self.membership.beat(self._now, [leader], self._relay_slack(), whole=False)
        self._out += beat

    def _relay_slack(self) -> float:
        return RELAY_SLACK * self.settings.heartbeat_interval

    # -------------------------------------------------------------- execution

    def _send_results(self) -> None:
        """Fresh results at once; every unrecorded one again each heartbeat interval."""
        items = self.dispatcher.ledger.take_fresh()
        if self._now >= self._next_resend:
            self._next_resend = self._now + self.settings.heartbeat_interval
            items = self.dispatcher.ledger.unrecorded(self.tasks)
        if not items:
            return
        if self.is_ready_leader:
            self.dispatcher.accept(self._wall, self.tasks, self.id, items)
        elif self.leader is not None:
            self._out.append((self.leader, Results(self.term, self.id, tuple(items))))

    def _lead_round(self) -> None:
        commands: list[Command] = []
        if self._serving_since is None:
            self._serving_since = self._now
            self.dispatcher.lead(self.tasks)
            self.retention.lead()
            self.ticks.reset()
            commands += self._declare_schedules()
        if self.tasks.schedules.schedules:
            commands += self.ticks.plan(self._wall, self.tasks.schedules, self._unended)
        ticked, self._ticked = self._ticked, False
        if ticked:
            commands += self.retention.plan(self._wall, self.tasks)
        needed, judge = self.dispatcher.needs_round(self._wall, self.tasks, ticked)
        if needed:  # else nothing to run or record this cycle
            judge_lost = self._now - self._serving_since > self.settings.failure_timeout
            live = {}
            if judge:
                live = {w.id: w.incarnation for w in self._workers(Status.ALIVE, Status.SUSPECT)}
            commands += self.dispatcher.round(
                self._wall, self.tasks, self._assignable(), live, judge_lost, judge
            )
        if commands:
            assignees = {a.worker for c in commands if isinstance(c, Assign) for a in c.items}
            self._propose(commands, assignees)  # they start at once
        if ticked and self.configuration.learners and not self.configs.pending:
            self._promote_caught_up()

    def _declare_schedules(self) -> list[Command]:
        """The schedules of `cluster.toml`, put by whoever leads when missing or
        different (never duplicated: a schedule is known by its name)."""
        book = self.tasks.schedules
        return [
            SchedulePut(self._wall, spec, replace=True)
            for spec in self.declared_schedules
            if (known := book.get(spec.name)) is None or known.spec != spec
        ]

    def _unended(self, task_id: int) -> bool:
        task = self.tasks.get(task_id)
        return task is not None and task.state not in TERMINAL

    def _assignable(self) -> list[Worker]:
        """The workers new attempts may go to: alive and not drained."""
        drained = self.tasks.drained
        return [w for w in self._workers(Status.ALIVE) if w.id not in drained]

    def _workers(self, *statuses: Status) -> list[Worker]:
        """Peers in one of `statuses`, with their incarnation."""
        workers = []
        voters = self.configuration.voter_ids  # (a learner runs nothing until it votes)
        for peer in (self.id, *self.membership.others):
            if peer not in voters:
                continue
            digest = self.membership.digest(peer)
            if digest and self.membership.status(peer, self._now) in statuses:
                workers.append(Worker(peer, digest.incarnation))
        return workers

    # ----------------------------------------------------------------- queries

    @property
    def behind(self) -> int:
        """Follower: how many committed entries the leader last told of it lacks."""
        if self.replicator.leading:
            return 0
        return max(0, self.replicator.leader_commit - self.replicator.commit_index)

    @property
    def catching_up(self) -> bool:
        """A follower whose log does not yet match its leader's (new, wiped or far
        behind): its reads may be missing what the cluster committed."""
        leader = self.election.leader
        return leader not in (None, self.id) and not self.replicator.in_sync

    @property
    def last_tick(self) -> float:
        """When the timers last ran (`-inf` before the first tick)."""
        return self._last_tick

    @property
    def role(self) -> Role:
        return self.election.role

    @property
    def leader(self) -> int | None:
        return self.election.leader

    @property
    def term(self) -> int:
        return self.election.term

    @property
    def is_ready_leader(self) -> bool:
        return self.election.role is Role.LEADER and self.replicator.serving

    def leader_is_ready(self) -> bool:
        """A leader is known and has committed an entry of its term (its no-op)."""
        if self.election.role is Role.LEADER:
            return self.replicator.serving
        commit = self.replicator.commit_index
        return self.election.leader is not None and self.log.term_at(commit) == self.term

    def view(self, now: float) -> dict[str, Any]:
        """This peer's view of the cluster, in the shape of `GET /cluster` (minus urls)."""
        return describe(self, now)

    # ----------------------------------------------------------------- helpers

    def _sync_log(self) -> None:
        caught_up = self.election.leader is not None and self.replicator.in_sync
        position = self.election.log
        if (position.term, position.index) != (self.log.last_term, self.log.last_index):
            position = LogPosition(self.log.last_term, self.log.last_index)
        self.election.set_log(position, caught_up)

    def _sync_roles(self) -> None:
        leading = self.election.role is Role.LEADER
        if leading and not self.replicator.leading:
            best_peer, best = self.election.best_log
            mine = (self.log.last_term, self.log.last_index)
            source = best_peer if best.key() > mine else self.id
            self.replicator.become_leader(self._now, self.election.term, source, best.index)
            if self.replicator.sync_lost:  # the claim does not hold in its configuration
                self.election.resign()
                self.replicator.step_down(self.election.term)
        elif not leading and self.replicator.leading:
            self.replicator.step_down(self.election.term)
        if not self.is_ready_leader:
            self._serving_since = None

    def _publish_local(self) -> None:
        local = (
            self.election.role.value,
            self.election.term,
            self.election.leader,
            self.log.last_index,
            self.replicator.commit_index,
        )
        if local == self._published:
            return
        self._published = local
        role, term, leader, last_index, commit_index = local
        self.membership.set_local(
            role=role, term=term, leader=leader, last_index=last_index, commit_index=commit_index
        )
