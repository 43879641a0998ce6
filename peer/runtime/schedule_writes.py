"""Schedule writes on the ready leader: put, delete, pause and resume a schedule.

Each is checked against the schedule book first (an identical put changes nothing and
answers 200; a different schedule of that name is 409 unless replacing; an unknown name
is 404), then proposed as one log command and answered once applied, so once a
majority has it. A follower forwards these like any write (`peer.runtime.service`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from peer.protocol.commands import ScheduleDelete, SchedulePause, SchedulePut, ScheduleSpec

if TYPE_CHECKING:
    from peer.runtime.node import Node
    from peer.runtime.service import Write

SCHEDULE_OPS = frozenset({"schedule_put", "schedule_delete", "schedule_pause"})
Answer = tuple[int, Any]


def error_answer(status: int, code: str, message: str) -> Answer:
    return status, {"error": {"code": code, "message": message}}


async def write_schedule(node: Node, write: Write) -> Answer:
    if write.op == "schedule_put":
        return await _put(node, ScheduleSpec.from_json(write.schedule), write.flag)
    book = node.core.tasks.schedules
    if book.get(write.name) is None:
        return error_answer(404, "not_found", f"no schedule {write.name!r}")
    if write.op == "schedule_delete":
        await node.propose(ScheduleDelete(time.time(), write.name))
        return 200, {"deleted": write.name}
    await node.propose(SchedulePause(time.time(), write.name, write.flag))
    schedule = book.get(write.name)
    if schedule is None:  # deleted meanwhile
        return error_answer(404, "not_found", f"no schedule {write.name!r}")
    return 200, schedule.to_json()


async def _put(node: Node, spec: ScheduleSpec, replace: bool) -> Answer:
    book = node.core.tasks.schedules
    known = book.get(spec.name)
    if known is not None and known.spec == spec:
        return 200, known.to_json()
    if known is not None and not replace:
        message = f"a different schedule is named {spec.name!r}; ?replace=1 replaces it"
        return error_answer(409, "conflict", message)
    applied = await node.propose(SchedulePut(time.time(), spec, replace))
    schedule = book.get(spec.name)
    if applied.outcome == "conflict" or schedule is None:
        return error_answer(409, "conflict", f"schedule {spec.name!r} changed meanwhile")
    return (201 if applied.outcome == "created" else 200), schedule.to_json()


def schedule_settled(node: Node, write: Write) -> bool:
    """Whether this peer has applied a schedule write the leader answered."""
    known = node.core.tasks.schedules.get(write.name or (write.schedule or {}).get("name", ""))
    if write.op == "schedule_delete":
        return known is None
    if write.op == "schedule_pause":
        return known is None or known.paused == write.flag
    return known is not None and known.spec == ScheduleSpec.from_json(write.schedule)
