"""Operator writes on the ready leader: retry a task, requeue every task a filter
matches, drain or undrain a peer.

Each is checked against the table first (an unknown task or peer is 404; a task that is
not failed or cancelled, or whose dependency is, is 409), then proposed as one log
command and answered once applied. A requeue is bounded (`limit`) and made one `Retry`
entry, whose answer says how many tasks it requeued. Shell tasks are retried only for
a write whose token is admin: the leader checks it (a follower's table may lag).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from peer.protocol.commands import Drain, Retry
from peer.runtime.schedule_writes import Answer, error_answer

if TYPE_CHECKING:
    from peer.runtime.node import Node
    from peer.runtime.service import Write

TASK_OPS = frozenset({"retry", "requeue", "drain"})
SHELL = "shell"  # a non-admin's retry is refused, its requeue leaves them out


async def write_task_op(node: Node, write: Write) -> Answer:
    if write.op == "retry":
        return await _retry(node, write.task_id, write.admin)
    if write.op == "requeue":
        return await _requeue(node, write.specs[0], write.admin)
    return await _drain(node, write.task_id, write.flag)


async def _retry(node: Node, task_id: int, admin: bool) -> Answer:
    table = node.core.tasks
    task = table.get(task_id)
    if task is None:
        return error_answer(404, "not_found", f"no task {task_id}")
    if task.kind == SHELL and not admin:  # checked here, on the leader, whoever forwarded it
        return error_answer(403, "forbidden", "retrying a shell task needs role admin")
    blocker = table.retry_blocker(task)
    if blocker is not None:
        return error_answer(409, "conflict", blocker)
    applied = await node.propose(Retry(time.time(), (task_id,)))
    if task_id not in applied.task_ids:
        return error_answer(409, "conflict", f"task {task_id} changed meanwhile")
    return 200, task.to_json()


async def _requeue(node: Node, query: dict[str, Any], admin: bool) -> Answer:
    table = node.core.tasks
    ids: list[int] = []
    for task in table.tasks.values():
        if len(ids) == query["limit"]:
            break
        matches = task.state == query["state"] and all(
            getattr(task, name) == query[name] for name in ("queue", "kind") if name in query
        )
        if matches and (admin or task.kind != SHELL) and table.retry_blocker(task) is None:
            ids.append(task.id)
    if not ids:
        return 200, {"requeued": 0, "ids": []}
    applied = await node.propose(Retry(time.time(), tuple(ids)))
    return 200, {"requeued": len(applied.task_ids), "ids": list(applied.task_ids)}


async def _drain(node: Node, peer: int, drained: bool) -> Answer:
    if peer not in node.core.configuration.ids:
        return error_answer(404, "not_found", f"no peer {peer}")
    await node.propose(Drain(time.time(), peer, drained))
    return 200, {"peer": peer, "drained": drained}
