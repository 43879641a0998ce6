"""Every message one peer sends another, and the union the transport carries.

Owns: the replication messages (`Append`, `AppendReply`, `FetchLog`, `LogChunk`,
`SnapshotChunk`, `SnapshotReply`), the worker's `Results`, and `PeerMessage`, the union
of these with the election's messages (`election.messages`) and membership's `Gossip`.
Frozen, slotted values; the one codec that turns them into bytes is
`peer.runtime.wire`. Pure data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from election.messages import Message
from peer.protocol.log import Entry
from peer.protocol.membership import Gossip


@dataclass(frozen=True, slots=True)
class Append:
    """Leader -> follower: entries after (prev_index, prev_term), and the commit index.

    With no entries it is the leader's heartbeat.
    """

    term: int
    sender: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendReply:
    term: int
    sender: int
    ok: bool
    match_index: int  # on success: the last index known to match; on refusal: a hint


@dataclass(frozen=True, slots=True)
class FetchLog:
    """A new leader asks the peer with the most up-to-date log for its entries; if that
    peer compacted them, it answers with its snapshot's text from `offset` on."""

    term: int
    sender: int
    from_index: int
    offset: int = 0


@dataclass(frozen=True, slots=True)
class LogChunk:
    term: int
    sender: int
    from_index: int
    entries: tuple[Entry, ...]
    last_index: int  # the responder's last index, so the fetcher knows when it is done


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """Part of a snapshot (`peer.protocol.snapshot`) of the log up to `index`, whose
    entry had `index_term`: its text from `offset` on; `done` with the last part. From
    a leader to a follower whose next entries it compacted, or from a log sync's
    source to the new leader that fetched them."""

    term: int
    sender: int
    index: int
    index_term: int
    offset: int
    data: str
    done: bool


@dataclass(frozen=True, slots=True)
class SnapshotReply:
    """A follower holds `offset` characters of the leader's snapshot at `index` (0:
    send it again from the start). Once installed it answers with an `AppendReply`."""

    term: int
    sender: int
    index: int
    offset: int


@dataclass(frozen=True, slots=True)
class ResultItem:
    task: int
    attempt: int
    ok: bool
    value: str  # the result as JSON text when ok, else the error message


@dataclass(frozen=True, slots=True)
class Results:
    """Worker -> leader: results of attempts it ran."""

    term: int
    sender: int
    items: tuple[ResultItem, ...]


ReplicationMessage = Append | AppendReply | FetchLog | LogChunk | SnapshotChunk | SnapshotReply
PeerMessage = Message | Gossip | ReplicationMessage | Results
