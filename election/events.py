"""What the election reports happened, as typed events (frozen, slotted values).

Each has a `name` (snake_case, for log fields and metric labels) and reads as a sentence
with `str()` (for the terminal). The peer's core adds its own (`peer.protocol.events`);
the logs, the dashboard and the metrics all take these same values. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class ElectionStarted:
    name: ClassVar[str] = "election_started"
    peer: int
    term: int  # the term it probes for

    def __str__(self) -> str:
        return f"election: term {self.term} started by {self.peer}"


@dataclass(frozen=True, slots=True)
class BecameLeader:
    name: ClassVar[str] = "became_leader"
    peer: int
    term: int

    def __str__(self) -> str:
        return f"peer {self.peer} leads, term {self.term}"


@dataclass(frozen=True, slots=True)
class Following:
    name: ClassVar[str] = "following"
    peer: int
    leader: int
    term: int

    def __str__(self) -> str:
        return f"peer {self.peer} follows {self.leader}, term {self.term}"


@dataclass(frozen=True, slots=True)
class LeaderLost:
    name: ClassVar[str] = "leader_lost"
    peer: int
    leader: int
    term: int

    def __str__(self) -> str:
        return f"leader {self.leader} lost (term {self.term})"


@dataclass(frozen=True, slots=True)
class LostMajority:
    name: ClassVar[str] = "lost_majority"
    peer: int
    term: int

    def __str__(self) -> str:
        return f"peer {self.peer} lost its majority, steps down (term {self.term})"


@dataclass(frozen=True, slots=True)
class SteppedDown:
    name: ClassVar[str] = "stepped_down"
    peer: int
    term: int  # the newer term it saw

    def __str__(self) -> str:
        return f"peer {self.peer} steps down: term {self.term} is newer"


@dataclass(frozen=True, slots=True)
class Resigned:
    name: ClassVar[str] = "resigned"
    peer: int
    term: int

    def __str__(self) -> str:
        return f"peer {self.peer} resigns term {self.term}: its log source lost entries"


@dataclass(frozen=True, slots=True)
class AmnesiaEnded:
    name: ClassVar[str] = "amnesia_ended"
    peer: int

    def __str__(self) -> str:
        return f"peer {self.peer} heard no leader since its start: it votes again"


ElectionEvent = (
    ElectionStarted
    | BecameLeader
    | Following
    | LeaderLost
    | LostMajority
    | SteppedDown
    | Resigned
    | AmnesiaEnded
)
