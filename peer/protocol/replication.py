"""Log replication, Raft-style, as a pure machine: `Replicator`.

Leader: up to `window` Appends in flight per follower (one while probing: at the start,
after a refusal or a loss, until one is accepted); entries proposed while the window is
full go out together in the next one (group commit), at most `max_batch` per message.
On a busy cluster the followers beyond those a majority needs are spares (`_spares`):
they get their entries with each heartbeat, not each round.
An index of the leader's own term is committed once a majority holds it on disk, and
everything below with it. The leader sends its entries while its own write of them is
still in flight (Raft thesis 10.2.1): its own copy counts only from `persisted`, when
the driver says the write landed, as a follower's counts only from its reply, sent
after its write.
A new leader first fetches the most up-to-date log among its acking majority (log sync),
then appends a no-op of its term, and serves writes only once that no-op is committed.

Follower: checks (prev_index, prev_term), drops a conflicting suffix, appends, and
answers with its match index (or a hint where to retry from on refusal).

Snapshots (Raft section 7): a log may start after a base, compacted into a snapshot.
A follower whose next entries the leader compacted gets the leader's snapshot instead,
in parts (`SnapshotChunk`, one in flight, each answered with `SnapshotReply`), installs
it, and answers with an `AppendReply` at its index; a log sync whose source compacted
what the new leader lacks fetches the source's snapshot the same way (`FetchLog` with
an offset). The machine only moves the text: the core decodes and installs the table
(`take_received`, then `install`).

Membership (`set_members`): a majority of the voters commits, the leader's own copy
included only while it votes; learners get the log and count for nothing. A new member
starts as a follower whose log is unknown; a removed one is still sent the log until it
holds the entry that removed it, committed (so it learns it is out), then dropped. A new
leader serves only once `confirm` (the core's check that its claim holds under the
configuration its synced log ends with) says so; otherwise `sync_lost` asks it to resign.

Terms are checked by the election before anything reaches this machine. Outputs are
collected for the driver: entries to persist (and where to truncate), messages, and
committed entries to apply. No I/O, no clock reads: `now` comes in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from peer.protocol.commands import NOOP_TEXT
from peer.protocol.log import Entry, Log
from peer.protocol.messages import (
    Append,
    AppendReply,
    FetchLog,
    LogChunk,
    ReplicationMessage,
    SnapshotChunk,
    SnapshotReply,
)
from peer.protocol.snapshot import Snapshot
from peer.protocol.transfer import Assembly, part_of


@dataclass(slots=True)
class _Follower:
    next_index: int  # the next entry to send it (past what is in flight)
    match_index: int = 0
    # (last index, resend after) of each Append with entries in flight, oldest first
    inflight: deque[tuple[int, float]] = field(default_factory=deque)
    probing: bool = True  # its log's end is unknown: one Append in flight, not a window
    # the snapshot being sent to it (to its end, even if a newer one is taken meanwhile)
    snapshot: Snapshot | None = None
    snapshot_offset: int = 0  # ... and where its part in flight starts
    retire_at: int = 0  # removed: dropped once it holds this entry, committed
    behind: bool = False  # its last Append could not carry all that waited (catching up)


class Replicator:
    def __init__(
        self,
        node_id: int,
        peers: Iterable[int],
        log: Log,
        commit_index: int = 0,
        max_batch: int = 512,
        resend_after: float = 0.25,
        window: int = 4,
        snapshot: Snapshot | None = None,
        chunk_size: int = 1 << 18,
        max_bytes: int = 1 << 20,
    ) -> None:
        """`snapshot`: the one the log's base was compacted into (its index is applied)."""
        self.id = node_id
        self.voters = frozenset(peers) | {node_id}
        self.others = tuple(sorted(self.voters - {node_id}))
        self.majority = len(self.voters) // 2 + 1
        self.confirm: Callable[[], bool] | None = None  # see the module docstring
        self.log = log
        self.snapshot = snapshot
        self.chunk_size = chunk_size
        self.max_bytes = max_bytes
        self.applied_index = 0 if snapshot is None else snapshot.index
        self.commit_index = max(commit_index, self.applied_index)
        self.received: tuple[Snapshot, int] | None = None  # whole, and from whom
        self._fetched: Snapshot | None = None  # the one a syncing leader fetches from here
        self._assembly = Assembly()
        self.durable_index = log.last_index  # own log on disk up to here, as it is now
        self.max_batch = max_batch
        self.resend_after = resend_after
        self.window = window
        self.term = 0
        self.leading = False
        self.serving = False  # leader whose no-op of this term is committed
        self.noop_index = 0
        self.sync_from: int | None = None  # peer whose log a new leader is fetching
        self.sync_at_least = 0  # ... and the last index it acked with
        self.sync_lost = False  # that peer answered with less: this leader must resign
        self.fetch_from = 0  # the next index that new leader asks it for
        self.leader_commit = 0  # follower: the commit index the leader last told us
        self.in_sync = False  # follower: the last Append matched
        self._followers: dict[int, _Follower] = {}
        self._voting: list[_Follower] = []  # the followers that vote
        self._serving_started = False  # leader: its followers are made
        self._notify: dict[int, int] = {}  # peer -> index it wants to hear committed at once
        self._persist_from: int | None = None
        self._outbox: list[tuple[int, ReplicationMessage]] = []
        self._due: dict[int, None] | None = None  # holding: the peers owed an Append
        self._proposed_held = False  # holding: entries were proposed (`flush` offers them)
        self.spare_linger = 0.1  # seconds spares stay spares after a busy majority (`_spares`)
        self._spares_until = float("-inf")

    # -------------------------------------------------------------- membership

    def set_members(self, voters: Iterable[int], learners: Iterable[int], now: float) -> None:
        """The configuration in force changed: who votes, who else gets the log."""
        self.voters = frozenset(voters)
        members = (self.voters | frozenset(learners)) - {self.id}
        self.majority = len(self.voters) // 2 + 1
        gone = set(self.others) - members
        self.others = tuple(sorted(members))
        if not self._serving_started:
            return  # (the followers are made when serving starts)
        for peer in self.others:
            follower = self._followers.get(peer)
            if follower is None:
                self._followers[peer] = _Follower(self.log.last_index + 1)
                self._send_append(peer, now)
            else:
                follower.retire_at = 0
        for peer in gone:
            follower = self._followers.get(peer)
            if follower is not None and not follower.retire_at:
                follower.retire_at = self.log.last_index  # (the entry that removed it)
        self._count_voters()
        if self._advance_commit():
            self._announce_commit(now)

    def _count_voters(self) -> None:
        self._voting = [f for p, f in self._followers.items() if p in self.voters]

    def _retire(self, peer: int, follower: _Follower, now: float) -> bool:
        """Drop a removed follower once it holds its removal, committed: told at once."""
        done = follower.retire_at and min(follower.match_index, self.commit_index) >= (
            follower.retire_at
        )
        if done:
            self._build_append(peer, now)  # (the commit index alone, before it is dropped)
            del self._followers[peer]
        return bool(done)

    # ------------------------------------------------------------------ leader

    def become_leader(self, now: float, term: int, best_peer: int, best_index: int = 0) -> None:
        """Start leading `term`; `best_peer` acked with the most up-to-date log, which
        ended at `best_index`."""
        self.term = term
        self.leading = True
        self.serving = False
        self.sync_lost = False
        self.sync_at_least = best_index
        self._followers = {}
        self._voting = []
        self._serving_started = False
        self._notify = {}
        if best_peer != self.id:
            self.sync_from = best_peer
            self.fetch_from = self.commit_index + 1
            self._outbox.append((best_peer, FetchLog(term, self.id, self.fetch_from)))
        else:
            self._synced(now)

    def step_down(self, term: int) -> None:
        self.term = term
        self.leading = self.serving = False
        self.sync_from = None
        self._followers = {}
        self._voting = []
        self._serving_started = False
        self._notify = {}

    def _synced(self, now: float) -> None:
        """The new leader's log is the best of its majority's: serve from it, if the
        claim holds under the configuration it ends with."""
        self.sync_from = None
        if self.confirm is not None and not self.confirm():
            self.sync_lost = True
            return
        self._start_serving(now)

    def _start_serving(self, now: float) -> None:
        self.noop_index = self._append(NOOP_TEXT).index
        self._followers = {p: _Follower(self.noop_index) for p in self.others}
        self._serving_started = True
        self._count_voters()
        for peer in self.others:
            self._send_append(peer, now)
        self._advance_commit()

    def propose(self, now: float, commands: list[str], notify: Iterable[int] = ()) -> list[Entry]:
        """Append commands as entries of this term; empty unless serving. The peers in
        `notify` (one that forwarded the write, a worker it assigns to) hear of the
        commit at once; the others with their next append or heartbeat."""
        if not self.serving:
            return []
        entries = [self._append(c) for c in commands]
        if entries:
            for peer in notify:
                if peer in self._followers:
                    self._notify[peer] = entries[-1].index
        if self._due is not None:
            self._proposed_held = True  # `flush` looks at the followers once for them all
        else:
            self._offer_entries(now)
        self._advance_commit()
        return entries

    def _offer_entries(self, now: float) -> None:
        """New entries wait: an Append to each follower whose window has room and that
        is no spare (noted for `flush` while sends are held)."""
        for follower in self._followers.values():
            self._expire(follower, now)
        spares = self._spares(now)
        for peer, follower in self._followers.items():
            if self._may_send(peer, follower, spares):
                self._send_append(peer, now)

    def hurry(self, now: float, peer: int) -> None:
        """Follower `peer` asked for the log up to the commit index now (a spare gets
        it with the heartbeat otherwise): its entries go at once if its window has room,
        and the commit index with them or, if some are on their way, after its reply."""
        follower = self._followers.get(peer)
        if not self.serving or follower is None:
            return
        self._expire(follower, now)
        if self._may_send(peer, follower) or not follower.inflight:
            self._send_append(peer, now)  # (nothing to send: the commit index alone)
        else:  # its window is full: it hears of the commit once a reply is in
            self._notify.setdefault(peer, self.commit_index)

    def heartbeat(self, now: float, peer: int) -> None:
        """The election's heartbeat to `peer`, as an Append (entries if any are due)."""
        follower = self._followers.get(peer)
        if follower is None:  # still syncing: affirm leadership, touch no entries
            self._outbox.append((peer, Append(self.term, self.id, 0, 0, (), 0)))
            if self.sync_from is not None and peer == self.sync_from:
                fetch = FetchLog(self.term, self.id, self.fetch_from, self._assembly.offset)
                self._outbox.append((peer, fetch))
            return
        self._expire(follower, now)
        if follower.inflight and not self._may_send(peer, follower):
            # entries (or a snapshot's part) are on their way: affirm leadership from
            # what it surely holds, or from nothing if that was compacted here
            prev = follower.match_index
            prev_term = self.log.term_at(prev)
            if follower.snapshot is not None or prev_term is None:
                affirm = Append(self.term, self.id, 0, 0, (), 0)
            else:
                affirm = Append(self.term, self.id, prev, prev_term, (), self.commit_index)
            self._outbox.append((peer, affirm))
        else:
            self._send_append(peer, now)

    def _may_send(
        self, peer: int, follower: _Follower, spares: frozenset[int] = frozenset()
    ) -> bool:
        """Entries wait for it and its window has room: one Append in flight while
        probing (after a refusal, a loss or at the start), `window` once it matched,
        none while it is one of `spares` (those get their entries with the heartbeat)."""
        if follower.next_index > self.log.last_index or peer in spares:
            return False
        return len(follower.inflight) < (1 if follower.probing else self.window)

    def _spares(self, now: float) -> frozenset[int]:
        """The followers that wait for the heartbeat for their entries.

        All but the `needed` voting followers furthest ahead (the highest match index,
        or the same and the lowest id), which with the leader's own copy make a
        majority, once the cluster is busy: those followers all had an Append in
        flight, and were not probing (a dead or refusing one probes, and must not keep
        the cluster busy), at some send in the last `spare_linger` seconds. Under any
        steady traffic (one client's included) that holds nearly always; after a quiet
        spell the next entry goes to every follower. A round then costs the spares no
        frame, write or reply, and a commit makes three peers write at once, not five.
        A spare holds every entry a heartbeat later, and if a follower ahead stops
        answering, the spares overtake it at their next heartbeat.

        Never a spare: one waiting to hear of a commit at once (it forwarded the write,
        or a task was given to it); one catching up (its last Append could not carry
        all that waited, by count or by bytes, or it is over one batch behind); a
        learner."""
        needed = self.majority - (1 if self.id in self.voters else 0)
        ranked = sorted(
            (((f.match_index, -p), p, f) for p, f in self._followers.items() if p in self.voters),
            key=lambda item: item[0],
            reverse=True,
        )
        if not 0 < needed < len(ranked):
            return frozenset()
        if all(f.inflight and not f.probing for _, _, f in ranked[:needed]):
            self._spares_until = now + self.spare_linger
        elif now >= self._spares_until:
            return frozenset()
        return frozenset(
            p
            for _, p, f in ranked[needed:]
            if p not in self._notify
            and not f.behind
            and self.log.last_index - f.next_index < self.max_batch
        )

    def _expire(self, follower: _Follower, now: float) -> None:
        """The oldest Append in flight has waited `resend_after`: count everything in
        flight as lost and probe again from what it matched."""
        if follower.inflight and now >= follower.inflight[0][1]:
            follower.inflight.clear()
            follower.next_index = follower.match_index + 1
            follower.probing = True

    def hold_sends(self) -> None:
        """Until `flush`, Appends owed to followers are only noted: a driver cycle that
        takes several proposals and replies sends each follower one Append with all of
        them, not one per proposal."""
        if self._due is None:
            self._due = {}

    def flush(self, now: float) -> None:
        """Send the Appends noted since `hold_sends`: one to each peer owed one, and
        more while entries beyond one Append's batch wait and its window has room."""
        if self._proposed_held:  # (once per cycle, not once per proposal)
            self._proposed_held = False
            self._offer_entries(now)
        due, self._due = self._due, None
        spares = self._spares(now) if due else frozenset()
        for peer in due or ():
            follower = self._followers.get(peer)
            if follower is None:
                continue  # (dropped since: retired, or this peer stepped down)
            self._build_append(peer, now)
            while self._may_send(peer, follower, spares):
                self._build_append(peer, now)

    def _send_append(self, peer: int, now: float) -> None:
        """The next Append to `peer`, or noted for `flush` while sends are held."""
        if self._due is not None:
            self._due[peer] = None
        else:
            self._build_append(peer, now)

    def _build_append(self, peer: int, now: float) -> None:
        """The next Append to `peer`: the entries from its next index on (none when it
        has them all: then it carries the commit index alone)."""
        follower = self._followers[peer]
        if follower.next_index <= self.log.base_index:
            self._send_part(peer, follower, now)
            return
        follower.snapshot = None  # (the entries it needs are held again: no snapshot)
        prev = follower.next_index - 1
        entries = self._batch_from(follower.next_index)
        prev_term = self.log.term_at(prev) or 0
        self._outbox.append(
            (peer, Append(self.term, self.id, prev, prev_term, entries, self.commit_index))
        )
        if entries:
            follower.inflight.append((entries[-1].index, now + self.resend_after))
            follower.next_index = entries[-1].index + 1
        follower.behind = follower.next_index <= self.log.last_index

    def _batch_from(self, start: int) -> tuple[Entry, ...]:
        """The entries from `start` one message carries: `max_batch` at most, and no
        more than `max_bytes` of commands beyond the first (an entry of a batch submit
        can hold hundreds of tasks)."""
        entries = self.log.slice(start, self.max_batch)
        size = 0
        for count, entry in enumerate(entries):
            size += len(entry.command)
            if size > self.max_bytes and count:
                return entries[:count]
        return entries

    def _send_part(self, peer: int, follower: _Follower, now: float) -> None:
        """The next part of this leader's snapshot to a follower that needs entries it
        compacted (from the start if it was sent another snapshot before)."""
        snapshot = follower.snapshot
        if snapshot is None:
            snapshot = self.snapshot
            assert snapshot is not None, "a log compacted without a snapshot"
            follower.snapshot, follower.snapshot_offset = snapshot, 0
        offset = follower.snapshot_offset
        data, done = part_of(snapshot, offset, self.chunk_size)
        part = SnapshotChunk(self.term, self.id, snapshot.index, snapshot.term, offset, data, done)
        self._outbox.append((peer, part))
        follower.inflight.append((snapshot.index, now + self.resend_after))
        follower.probing = True  # one part at a time

    def on_snapshot_reply(self, now: float, msg: SnapshotReply) -> None:
        """A follower holds `msg.offset` of the snapshot being sent: the next part."""
        follower = self._followers.get(msg.sender)
        if not self.leading or follower is None or msg.term != self.term:
            return
        if follower.snapshot is None or msg.index != follower.snapshot.index:
            return  # about a snapshot it is no longer sent
        if msg.offset == follower.snapshot_offset:
            return  # a second answer to a part before (the part in flight: on its way)
        follower.snapshot_offset = msg.offset
        follower.inflight.clear()
        if follower.next_index <= self.log.base_index:
            self._send_part(msg.sender, follower, now)

    def on_append_reply(self, now: float, msg: AppendReply) -> None:
        follower = self._followers.get(msg.sender)
        if not self.leading or follower is None or msg.term != self.term:
            return
        if msg.ok:
            follower.match_index = max(follower.match_index, msg.match_index)
            follower.next_index = max(follower.next_index, follower.match_index + 1)
            while follower.inflight and follower.inflight[0][0] <= follower.match_index:
                follower.inflight.popleft()
            if follower.snapshot is not None and follower.match_index >= follower.snapshot.index:
                follower.snapshot = None  # installed
            if follower.snapshot is None:
                follower.probing = False  # its log matches up to there: the window opens
            if self._advance_commit():
                self._announce_commit(now)
            if follower.retire_at and self._retire(msg.sender, follower, now):
                return
        else:
            if msg.match_index < follower.match_index:
                # it no longer holds what it acknowledged (a wiped disk), or its hint is
                # cautious: count only what it can vouch for, and resend from there
                follower.match_index = msg.match_index
            retry_at = min(follower.next_index - 1, msg.match_index + 1)
            follower.next_index = max(follower.match_index + 1, retry_at)
            follower.inflight.clear()
            follower.probing = True
        self._expire(follower, now)
        if self._may_send(msg.sender, follower, self._spares(now)):
            self._send_append(msg.sender, now)
        elif not follower.inflight and self._waits(msg.sender):
            self._send_append(msg.sender, now)  # the commit index alone

    def reply_is_news(self, msg: AppendReply) -> bool:
        """Whether a reply needs a cycle now: False for the leader's usual idle answer
        and for a late one (accepted, matching nothing beyond the commit index, nothing
        left to send it, no commit it waits to hear of). Such a reply waits for the
        leader's next cycle, which takes it in (its match index, its in-flight Append)."""
        follower = self._followers.get(msg.sender)
        if not self.leading or follower is None or msg.term != self.term or not msg.ok:
            return True
        return (
            msg.match_index > max(follower.match_index, self.commit_index)  # may commit
            or follower.next_index <= self.log.last_index  # entries not yet sent to it
            or self._notify.get(msg.sender, self.commit_index + 1) <= self.commit_index
        )

    def on_log_chunk(self, now: float, msg: LogChunk) -> None:
        if not self.leading or msg.sender != self.sync_from or msg.term != self.term:
            return
        if msg.from_index != self.fetch_from:
            return  # a duplicate or a stale chunk
        if msg.last_index < self.sync_at_least:
            # the source lost entries it acked with (its disk was wiped): its log is no
            # longer the best one, and serving from it could drop a committed entry
            self.sync_lost = True
            return
        self._truncate_after(msg.from_index - 1)
        self.log.merge(msg.entries)
        self._mark_dirty(msg.from_index)
        if self.log.last_index < msg.last_index and msg.entries:
            self.fetch_from = self.log.last_index + 1
            self._outbox.append((msg.sender, FetchLog(self.term, self.id, self.fetch_from)))
            return
        self._synced(now)

    def on_sync_part(self, now: float, msg: SnapshotChunk) -> None:
        """A part of the snapshot of the log sync's source, which compacted entries this
        new leader lacks: once whole it is installed, and the fetch goes on after it."""
        if not self.leading or msg.sender != self.sync_from or msg.term != self.term:
            return
        snapshot = self._assembly.receive(msg)
        if snapshot is not None:
            self.received = (snapshot, msg.sender)
        elif not self._assembly.repeat:  # (a repeat: the answer to a resent fetch)
            fetch = FetchLog(self.term, self.id, self.fetch_from, self._assembly.offset)
            self._outbox.append((msg.sender, fetch))

    def persisted(self, now: float, index: int, term: int) -> None:
        """The driver's write of the log up to `index` (whose entry there had `term`)
        landed. Log matching makes the term check enough: if the entry at `index` still
        has that term, everything up to it is as the write saw it; if a later truncation
        replaced it, a later write will report again."""
        if index <= self.durable_index or self.log.term_at(index) != term:
            return
        self.durable_index = index
        syncing = self.sync_from is not None  # (no followers to count yet)
        if self.leading and not syncing and self._advance_commit():
            self._announce_commit(now)

    def _advance_commit(self) -> bool:
        """Move the commit index to what a majority holds on disk; True if it moved."""
        matches = [f.match_index for f in self._voting]
        if self.id in self.voters:
            matches.append(self.durable_index)
        if len(matches) < self.majority:
            return False
        matches.sort(reverse=True)
        candidate = matches[self.majority - 1]
        if candidate <= self.commit_index or self.log.term_at(candidate) != self.term:
            return False
        self.commit_index = candidate
        if self.commit_index >= self.noop_index:
            self.serving = True
        return True

    def _waits(self, peer: int) -> bool:
        """Whether `peer` waits to hear of a commit that has happened (and is told now)."""
        index = self._notify.get(peer)
        if index is None or index > self.commit_index:
            return False
        del self._notify[peer]
        return True

    def _announce_commit(self, now: float) -> None:
        """Tell a follower waiting for a commit (it forwarded the write, or is to run
        what it assigns) the new commit index now, not at the next heartbeat, if it is
        idle (a busy one learns it when its reply comes back). The others learn it with
        their next append: one message fewer each way per commit."""
        for peer, follower in list(self._followers.items()):
            if follower.retire_at and self._retire(peer, follower, now):
                continue
            if not follower.inflight and self._waits(peer):
                self._send_append(peer, now)

    # ---------------------------------------------------------------- follower

    def on_append(self, msg: Append) -> None:
        """An Append whose term the election has accepted."""
        self.term = msg.term
        self.leading = self.serving = False
        self.leader_commit = msg.commit
        base = self.log.base_index
        if msg.prev_index < base:  # it holds all up to its base, committed as sent
            covered = msg.prev_index + len(msg.entries)
            if covered <= base:
                self._reply(msg.sender, True, covered)
                return
            skipped = msg.entries[base - msg.prev_index :]
            msg = replace(msg, prev_index=base, prev_term=self.log.base_term, entries=skipped)
        term_at_prev = self.log.term_at(msg.prev_index)
        if term_at_prev != msg.prev_term:
            self.in_sync = False
            self._reply(msg.sender, False, self._retry_hint(msg.prev_index, term_at_prev))
            return
        held = self.log.last_index
        truncated = self.log.merge(msg.entries)
        if truncated is not None:
            self.durable_index = min(self.durable_index, truncated)
            self._mark_dirty(truncated + 1)
        elif msg.entries and msg.entries[-1].index > held:
            self._mark_dirty(held + 1)  # (what it held already is on its way to disk)
        match = msg.prev_index + len(msg.entries)
        self.commit_index = max(self.commit_index, min(msg.commit, match))
        self.in_sync = self.commit_index >= msg.commit
        self._reply(msg.sender, True, match)

    def _retry_hint(self, prev_index: int, term_at_prev: int | None) -> int:
        if term_at_prev is None:
            return self.log.last_index
        first = prev_index
        while first > 1 and self.log.term_at(first - 1) == term_at_prev:
            first -= 1
        return max(self.commit_index, first - 1)

    def _reply(self, to: int, ok: bool, match: int) -> None:
        self._outbox.append((to, AppendReply(self.term, self.id, ok, match)))

    def on_snapshot_chunk(self, msg: SnapshotChunk) -> None:
        """A part of the leader's snapshot (the election accepted its term): held, or,
        once whole, installed and answered as an Append up to its index would be."""
        self.term = msg.term
        self.leading = self.serving = False
        self.in_sync = False
        if msg.index <= self.log.base_index or self.log.term_at(msg.index) == msg.index_term:
            self._reply(msg.sender, True, msg.index)  # it holds that much already
            return
        snapshot = self._assembly.receive(msg)
        if snapshot is not None:
            self.received = (snapshot, msg.sender)
        else:
            reply = SnapshotReply(self.term, self.id, msg.index, self._assembly.offset)
            self._outbox.append((msg.sender, reply))

    def take_received(self) -> tuple[Snapshot, int] | None:
        """A snapshot received whole since the last call, and from whom: the core
        decodes it, then `install`s it (or drops it if it does not decode)."""
        received, self.received = self.received, None
        return received

    def install(self, snapshot: Snapshot, sender: int) -> None:
        """Go on from a snapshot received whole (and decoded by the core): a follower
        answers its leader as for an Append up to its index; a new leader syncing its
        log fetches what follows it from the source."""
        if self.leading:
            if self.sync_from != sender or snapshot.index < self.fetch_from:
                return  # (no longer syncing from there, or nothing it lacks)
            self._install(snapshot)
            self.fetch_from = snapshot.index + 1
            self._outbox.append((sender, FetchLog(self.term, self.id, self.fetch_from)))
        elif snapshot.index > self.log.base_index:
            self._install(snapshot)
            self._reply(sender, True, snapshot.index)

    def _install(self, snapshot: Snapshot) -> None:
        """Start from `snapshot` (newer than anything applied here): the log is reset to
        its index (keeping what follows if the log holds its entry), which counts as
        committed, applied and, once its write lands, durable."""
        kept = self.log.reset_to(snapshot.index, snapshot.term)
        self.snapshot = snapshot
        self.commit_index = max(self.commit_index, snapshot.index)
        self.applied_index = snapshot.index
        self.durable_index = max(self.durable_index, snapshot.index) if kept else snapshot.index
        if not kept or self._persist_from is not None:  # rows after it: rewritten or gone
            self._persist_from = max(self._persist_from or 0, snapshot.index + 1)

    def compacted(self, snapshot: Snapshot, base: int) -> None:
        """This peer's own `snapshot` is on disk, with the log up to `base` dropped."""
        if self.snapshot is None or snapshot.index > self.snapshot.index:
            self.snapshot = snapshot
        self.log.compact(min(base, self.applied_index))

    def on_fetch(self, msg: FetchLog) -> None:
        if msg.from_index <= self.log.base_index:  # compacted here: the snapshot instead
            if msg.offset == 0 or self._fetched is None:
                self._fetched = self.snapshot  # (one fetch goes on with the one it began)
            snapshot = self._fetched
            assert snapshot is not None, "a log compacted without a snapshot"
            data, done = part_of(snapshot, msg.offset, self.chunk_size)
            part = SnapshotChunk(
                msg.term, self.id, snapshot.index, snapshot.term, msg.offset, data, done
            )
            self._outbox.append((msg.sender, part))
            return
        entries = self._batch_from(msg.from_index)
        # the election accepted the fetcher's term: answer in it, even if no Append of
        # that term has arrived yet (the first fetch travels ahead of the heartbeats)
        chunk = LogChunk(msg.term, self.id, msg.from_index, entries, self.log.last_index)
        self._outbox.append((msg.sender, chunk))

    # ------------------------------------------------------------------ output

    def _append(self, command: str) -> Entry:
        entry = self.log.append(self.term, command)
        self._mark_dirty(entry.index)
        return entry

    def _truncate_after(self, index: int) -> None:
        if index < self.log.last_index:
            self.log.truncate_after(index)
            self.durable_index = min(self.durable_index, index)
            self._mark_dirty(index + 1)

    def _mark_dirty(self, index: int) -> None:
        if self._persist_from is None or index < self._persist_from:
            self._persist_from = index

    def take_persist(self) -> tuple[int, list[Entry]] | None:
        """(first index to rewrite, entries from there on) since the last call, or None."""
        if self._persist_from is None:
            return None
        start, self._persist_from = self._persist_from, None
        start = max(start, self.log.base_index + 1)  # (compacted since: its snapshot holds it)
        return start, list(self.log.slice(start, self.log.last_index))

    def take_messages(self) -> list[tuple[int, ReplicationMessage]]:
        out, self._outbox = self._outbox, []
        return out

    def match_index(self, peer: int) -> int | None:
        """Leader: how far `peer`'s log is known to match this one's (None: not sent)."""
        follower = self._followers.get(peer)
        return None if follower is None else follower.match_index

    def lag(self) -> dict[int, int]:
        """Leader: how many entries each follower lacks (none when not leading)."""
        if not self.leading:
            return {}
        return {p: self.log.last_index - f.match_index for p, f in self._followers.items()}

    def take_committed(self) -> list[Entry]:
        """Committed entries not yet handed out for applying, in log order."""
        if self.commit_index <= self.applied_index:
            return []
        count = self.commit_index - self.applied_index
        entries = list(self.log.slice(self.applied_index + 1, count))
        self.applied_index = self.commit_index
        return entries
