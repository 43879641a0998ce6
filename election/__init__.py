"""The bully election, made safe with terms, majority confirmation and log positions.

Pure: no I/O, no clock, no global random. See `election.bully` for the theory.
"""

from election.bully import BullyElection, Phase, Timings
from election.events import ElectionEvent
from election.messages import (
    ALL_MESSAGES,
    Alive,
    Coordinator,
    CoordinatorAck,
    Election,
    Envelope,
    HardState,
    Heartbeat,
    HeartbeatAck,
    LogPosition,
    Message,
    Probe,
    ProbeReply,
    Ready,
    Role,
)

__all__ = [
    "ALL_MESSAGES",
    "Alive",
    "BullyElection",
    "Coordinator",
    "CoordinatorAck",
    "Election",
    "ElectionEvent",
    "Envelope",
    "HardState",
    "Heartbeat",
    "HeartbeatAck",
    "LogPosition",
    "Message",
    "Phase",
    "Probe",
    "ProbeReply",
    "Ready",
    "Role",
    "Timings",
]
