"""What goes into one core cycle and what comes out: the inbox's items (`Received`,
`Proposal`, `Completed`, `Persisted`, `SnapshotStored`, `Hurry`) and the `CoreReady`
batch the driver carries out.
Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from election import HardState
from peer.protocol.commands import Command
from peer.protocol.configuration import ChangeRefused
from peer.protocol.events import CoreEvent
from peer.protocol.log import Entry
from peer.protocol.messages import PeerMessage, ResultItem
from peer.protocol.records import Applied, Task
from peer.protocol.snapshot import SnapshotWrite


@dataclass(frozen=True, slots=True)
class Received:
    """A peer message, and when it arrived (the driver may hold one for a while)."""

    at: float
    message: PeerMessage


@dataclass(frozen=True, slots=True)
class Proposal:
    """Commands a client write wants in the log; `ref` names it in `CoreReady.proposed`;
    `origin`, if given, a follower to tell of the commit at once (the driver names none
    since a forwarding follower answers from the leader's reply: `Hurry` instead)."""

    ref: int
    commands: tuple[Command, ...]
    origin: int | None = None


@dataclass(frozen=True, slots=True)
class Completed:
    """This peer finished running an attempt (ok or not)."""

    item: ResultItem


@dataclass(frozen=True, slots=True)
class Persisted:
    """The driver's write of the log up to `index` (the entry there of `term`) landed."""

    index: int
    term: int


@dataclass(frozen=True, slots=True)
class SnapshotStored:
    """The driver's write of the snapshot at `index` (and the compaction with it) landed."""

    index: int


@dataclass(frozen=True, slots=True)
class Hurry:
    """Follower `peer` asked this leader for the log up to the commit index now, not
    with its next heartbeat (it holds a read until it has applied a write it forwarded)."""

    peer: int


Input = Received | Proposal | Completed | Persisted | SnapshotStored | Hurry


@dataclass(slots=True)
class CoreReady:
    """One batch of output, carried out in this order: persist `hard_state`, `entries`
    (rewriting the log from `entries_from`) and `commit_index`; send `messages`; then
    hand `applied` to whoever waits on it and report `events`. A `snapshot` is stored
    in the same write (and reported back as `SnapshotStored`). `early` may leave before
    the write (and any earlier one still in flight) lands: a leader's appends, whose
    own copy counts only once `Persisted` says so (`peer.protocol.writes`).

    `commit_index` only rides along with a write that happens anyway: it is a lower bound
    that spares a restarted peer some waiting, never needed for safety (a restarted peer
    learns the commit index from the leader)."""

    hard_state: HardState | None = None
    entries_from: int | None = None
    entries: list[Entry] = field(default_factory=list)
    commit_index: int | None = None
    snapshot: SnapshotWrite | None = None  # a snapshot to store, and the log to compact
    messages: list[tuple[int, PeerMessage]] = field(default_factory=list)
    early: list[tuple[int, PeerMessage]] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)
    starts: list[Task] = field(default_factory=list)  # attempts to run on this peer
    stops: list[tuple[int, int]] = field(default_factory=list)  # (task, attempt) to stop
    events: list[CoreEvent] = field(default_factory=list)
    # (proposal ref, the entries it got): none when this peer is not a ready leader
    proposed: list[tuple[int, list[Entry]]] = field(default_factory=list)
    # (proposal ref, why): a membership change this leader cannot make
    refused: list[tuple[int, ChangeRefused]] = field(default_factory=list)
