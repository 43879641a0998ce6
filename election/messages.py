"""The election's messages and outputs: frozen, slotted dataclasses and nothing else.

Every message carries the sender's id and a term. `Election` / `Alive` are bully's
messages; `Probe` asks "would you ack me?" without changing anyone's state (so a peer
with a stale view cannot disrupt a live leader); `Coordinator` is the real claim, acked
at most once per term; `Heartbeat` is how a leader holds its term.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from election.events import ElectionEvent


class Role(Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True, slots=True)
class LogPosition:
    """The last entry of a peer's log: compared by term, then index."""

    term: int = 0
    index: int = 0

    def key(self) -> tuple[int, int]:
        return (self.term, self.index)


@dataclass(frozen=True, slots=True)
class Election:
    """To higher ids: "the leader looks gone; are you there?"."""

    term: int
    sender: int


@dataclass(frozen=True, slots=True)
class Alive:
    """A higher peer's answer to `Election`: it is alive and takes over."""

    term: int
    sender: int


@dataclass(frozen=True, slots=True)
class Probe:
    """Would you ack me as leader of `term`? Answering it changes no state."""

    term: int
    sender: int
    log: LogPosition


@dataclass(frozen=True, slots=True)
class ProbeReply:
    term: int
    sender: int
    probe_term: int
    granted: bool
    higher: int | None = None  # the live higher peer the refusal points to


@dataclass(frozen=True, slots=True)
class Coordinator:
    """The claim: `sender` leads `term` once a majority has acked it."""

    term: int
    sender: int
    log: LogPosition


@dataclass(frozen=True, slots=True)
class CoordinatorAck:
    """An answer to a claim. It names the acker's configuration when that came from a
    membership change (`config`: its version, `voters`), so that a claimant that missed
    changes does not count its acks in a configuration it no longer holds."""

    term: int
    sender: int
    granted: bool
    log: LogPosition = field(default_factory=LogPosition)
    config: int = 0
    voters: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A leader holding its term; followers answer with `HeartbeatAck`."""

    term: int
    sender: int


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    term: int
    sender: int
    ok: bool


Message = (
    Election | Alive | Probe | ProbeReply | Coordinator | CoordinatorAck | Heartbeat | HeartbeatAck
)

ALL_MESSAGES: tuple[type, ...] = (
    Election,
    Alive,
    Probe,
    ProbeReply,
    Coordinator,
    CoordinatorAck,
    Heartbeat,
    HeartbeatAck,
)


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    voted_for: int | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    to: int
    message: Message


@dataclass(slots=True)
class Ready:
    """One batch of output. The driver persists `hard_state`, then sends `messages`."""

    hard_state: HardState | None = None
    messages: list[Envelope] = field(default_factory=list)
    events: list[ElectionEvent] = field(default_factory=list)

    def empty(self) -> bool:
        return self.hard_state is None and not self.messages and not self.events
