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


CoreEvent = ElectionEvent | PeerRestarted
