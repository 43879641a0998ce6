"""What a peer's core reports happened: the election's typed events and its own.

One vocabulary for everything that reports: the driver logs each with its `name` as the
`event` field and its sentence as the message; the terminal dashboard and the coming
metrics and web page read the same values. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from election.events import ElectionEvent


@dataclass(frozen=True, slots=True)
class PeerRestarted:
    """Gossip shows another peer back with a higher incarnation."""

    name: ClassVar[str] = "peer_restarted"
    peer: int

    def __str__(self) -> str:
        return f"peer {self.peer} restarted"


@dataclass(frozen=True, slots=True)
class SnapshotInstalled:
    """This peer started from another's snapshot (it lacked entries that one compacted)."""

    name: ClassVar[str] = "snapshot_installed"
    index: int
    peer: int

    def __str__(self) -> str:
        return f"installed the snapshot of peer {self.peer} at index {self.index}"


@dataclass(frozen=True, slots=True)
class SnapshotRefused:
    """A snapshot received whole did not decode; nothing was installed."""

    name: ClassVar[str] = "snapshot_refused"
    index: int
    peer: int
    reason: str

    def __str__(self) -> str:
        return f"refused the snapshot of peer {self.peer} at index {self.index}: {self.reason}"


@dataclass(frozen=True, slots=True)
class MembersChanged:
    """The configuration in force here changed (a `Members` entry reached the log, or
    one was replaced); `index` is its entry's."""

    name: ClassVar[str] = "members_changed"
    index: int
    voters: tuple[int, ...]
    learners: tuple[int, ...]

    def __str__(self) -> str:
        learners = f", learners {list(self.learners)}" if self.learners else ""
        return f"configuration of index {self.index}: voters {list(self.voters)}{learners}"


CoreEvent = ElectionEvent | PeerRestarted | SnapshotInstalled | SnapshotRefused | MembersChanged
