"""The order of a peer's output against its disk: what the next write holds, and which
batches wait for which write. Pure bookkeeping, shared by the driver and the simulator.

A core batch asks to persist some state (hard state, log entries, commit index) and
carries effects that may only happen once that state, and everything asked before it,
is on disk: its messages (a vote, an append's acknowledgement, a log chunk), the
entries it applied and the attempts it starts. `WriteQueue` stages what batches ask to
persist into one write at a time (group commit: whatever the cycles ask while a write
is in flight goes into the next one), and holds each batch's effects until the write
that covers it lands; batches come out in the order they went in. A leader's appends
(`CoreReady.early`) need none of it and leave at once; the leader counts its own copy
of an entry only when the write of it landed (`Replicator.persisted`).

A snapshot to store goes with the next write too (the newest one staged wins); the
entries staged from below its base are not written, the snapshot holds them.

An acknowledgement of entries (`AppendReply`) made in a term older than one a landed
write recorded is dropped when its batch is released: that write may have truncated
the entries it vouches for (a newer leader's conflicting entries replaced them, which
only a newer term can do), and the old leader would count a copy that is not on disk.
(The simulator found it: an old leader's append answered and a new leader's truncation
in the same cycle.) Dropping a message is always safe: the protocol resends.

A refused write (a full disk) is staged again under whatever came after it; what its
batches applied waits for that retry, their messages are dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from election import HardState
from peer.protocol.cycle import CoreReady
from peer.protocol.log import Entry, Log
from peer.protocol.messages import AppendReply
from peer.protocol.snapshot import SnapshotWrite


@dataclass(frozen=True, slots=True)
class Write:
    """One transaction: hard state, the log rewritten from `entries_from` with
    `entries` (a copy, taken when the write started), the commit index, and a snapshot
    with the log's new base."""

    number: int
    hard_state: HardState | None
    entries_from: int | None
    entries: tuple[Entry, ...]
    commit_index: int | None
    snapshot: SnapshotWrite | None = None

    @property
    def last_entry(self) -> Entry | None:
        return self.entries[-1] if self.entries else None


class WriteQueue:
    def __init__(self) -> None:
        self._hard_state: HardState | None = None  # staged for the next write
        self._entries_from: int | None = None
        self._commit_index: int | None = None
        self._snapshot: SnapshotWrite | None = None
        self._base = 0  # the log's base in the writes taken so far (never rewritten below)
        self._next = 1  # number of the next write
        self.in_flight: Write | None = None
        self._written_term = 0  # the newest term a landed write recorded
        self._held: deque[tuple[int, CoreReady]] = deque()  # (write it needs, batch)

    @property
    def staged(self) -> bool:
        return (
            self._hard_state is not None
            or self._entries_from is not None
            or self._snapshot is not None
        )

    @property
    def holding(self) -> int:
        """Batches waiting for a write."""
        return len(self._held)

    def add(self, batch: CoreReady) -> list[CoreReady]:
        """Stage what `batch` asks to persist; return the batches whose effects may be
        carried out now (`batch` itself when nothing is staged or in flight)."""
        self._stage(batch.hard_state, batch.entries_from, batch.commit_index, batch.snapshot)
        if self.staged:
            needs = self._next
        elif self.in_flight is not None:
            needs = self.in_flight.number
        else:
            return [batch]
        self._held.append((needs, batch))
        return []

    def take_write(self, log: Log) -> Write | None:
        """Start the next write, if none is in flight and something is staged."""
        if self.in_flight is not None or not self.staged:
            return None
        start, snapshot = self._entries_from, self._snapshot
        if snapshot is not None:
            self._base = max(self._base, snapshot.base_index)
        if start is not None:  # (what a snapshot holds is never written again)
            start = max(start, self._base + 1, log.base_index + 1)
        entries = () if start is None else log.slice(start, max(0, log.last_index - start + 1))
        write = Write(self._next, self._hard_state, start, entries, self._commit_index, snapshot)
        self._next += 1
        self._hard_state = self._entries_from = self._commit_index = self._snapshot = None
        self.in_flight = write
        return write

    def landed(self) -> list[CoreReady]:
        """The write in flight is on disk: the batches it released, in order."""
        write, self.in_flight = self.in_flight, None
        assert write is not None, "no write in flight"
        if write.hard_state is not None:
            self._written_term = max(self._written_term, write.hard_state.term)
        released = []
        while self._held and self._held[0][0] <= write.number:
            batch = self._held.popleft()[1]
            if any(_stale_ack(m, self._written_term) for _, m in batch.messages):
                batch.messages = [
                    (to, m) for to, m in batch.messages if not _stale_ack(m, self._written_term)
                ]
            released.append(batch)
        return released

    def refused(self) -> None:
        """The write in flight failed: its state goes back in front of what was staged
        since, and what waited for it waits for the next write. The messages that
        waited are dropped (the protocol resends what matters, and a long outage must
        not pile them up); what was applied, started or stopped is kept, in order, as
        one batch."""
        write, self.in_flight = self.in_flight, None
        assert write is not None, "no write in flight"
        later = (self._hard_state, self._entries_from, self._commit_index, self._snapshot)
        self._hard_state = self._entries_from = self._commit_index = self._snapshot = None
        self._stage(write.hard_state, write.entries_from, write.commit_index, write.snapshot)
        self._stage(*later)
        kept = CoreReady()
        for _, batch in self._held:
            kept.applied += batch.applied
            kept.starts += batch.starts
            kept.stops += batch.stops
            kept.events += batch.events
        self._held = deque([(self._next, kept)])

    def _stage(
        self,
        hard_state: HardState | None,
        entries_from: int | None,
        commit: int | None,
        snapshot: SnapshotWrite | None = None,
    ) -> None:
        if hard_state is not None:
            self._hard_state = hard_state
        if entries_from is not None:
            start = self._entries_from
            self._entries_from = entries_from if start is None else min(start, entries_from)
        if commit is not None:
            self._commit_index = commit
        staged = self._snapshot
        if snapshot is not None and (
            staged is None or snapshot.snapshot.index >= staged.snapshot.index
        ):
            self._snapshot = snapshot


def _stale_ack(message: object, written_term: int) -> bool:
    return isinstance(message, AppendReply) and message.ok and message.term < written_term
