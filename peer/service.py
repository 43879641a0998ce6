"""Client writes: submit and cancel through the leader, forwarding from followers.

A write is handled by the ready leader, which turns it into one log command, proposes
it and answers once the entry is applied (so once a majority has it on disk). A
follower forwards the request to the leader it knows; with no ready leader within
`submit_wait` the answer is 503 with `Retry-After`. Reads are local (see `peer.api`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from peer.node import LeadershipLost, Node, NotLeader
from peer.tasks import TERMINAL, Applied
from peer.validation import BadRequest

log = logging.getLogger(__name__)

FORWARDED = "X-Forwarded-By"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str] | None = None


def unavailable(message: str) -> Reply:
    return Reply(503, {"error": {"code": "unavailable", "message": message}}, {"Retry-After": "1"})


class WriteService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    # ---------------------------------------------------------------- routing

    async def write(
        self, path: str, body: bytes, forwarded: bool, leader_action: Callable[[], Awaitable[Reply]]
    ) -> Reply:
        """Run `leader_action()` here when leading, else forward `body` to the leader."""
        deadline = time.monotonic() + self.node.config.submit_wait
        while True:
            core = self.node.core
            try:
                if core.is_ready_leader:
                    return await leader_action()
            except (NotLeader, LeadershipLost):
                pass  # lost the lead mid-request; wait for the next leader
            leader = core.leader
            if not forwarded and leader is not None and leader != self.node.id:
                reply = await self._forward(leader, path, body, deadline)
                if reply is not None:
                    return reply
            left = deadline - time.monotonic()
            if left <= 0:
                return unavailable("no ready leader; retry later")
            await self.node.wait_changed(min(left, 0.05))

    async def _forward(self, leader: int, path: str, body: bytes, deadline: float) -> Reply | None:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        url = self.node.config.node(leader).url + path
        headers = {"Content-Type": "application/json", FORWARDED: str(self.node.id)}
        timeout = aiohttp.ClientTimeout(total=max(0.1, deadline - time.monotonic() + 1.0))
        try:
            async with self.session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                if resp.status == 503:
                    return None
                data = await resp.read()
                return Reply(resp.status, orjson.loads(data) if data else None)
        except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError):
            return None

    # ----------------------------------------------------------------- leader

    async def submit(self, specs: list[dict[str, Any]], order: list[int] | None) -> Reply:
        """Leader: check dependencies exist, propose, answer with the tasks."""
        table = self.node.core.tasks
        for i, spec in enumerate(specs):
            position = order[i] if order is not None else None
            for dep in spec.get("depends_on", ()):
                if table.get(dep) is None:
                    where = "depends_on" if position is None else f"tasks[{position}].depends_on"
                    raise BadRequest(where, f"no task with id {dep}")
        command = {"op": "submit", "at": time.time(), "tasks": specs}
        applied = await self.node.propose(orjson.dumps(command).decode())
        return self._submitted(applied, order)

    def _submitted(self, applied: Applied, order: list[int] | None) -> Reply:
        table = self.node.core.tasks
        tasks = [table.tasks[i].to_json() for i in applied.task_ids]
        status = 201 if any(applied.created) else 200
        if order is None:
            return Reply(status, tasks[0])
        in_request_order: list[Any] = [None] * len(tasks)
        for task, position in zip(tasks, order, strict=True):
            in_request_order[position] = task
        return Reply(status, {"tasks": in_request_order})

    async def cancel(self, task_id: int) -> Reply:
        task = self.node.core.tasks.get(task_id)
        if task is None:
            return Reply(404, {"error": {"code": "not_found", "message": f"no task {task_id}"}})
        if task.state in TERMINAL:
            return _conflict(task_id, task.state)
        command = {"op": "cancel", "at": time.time(), "id": task_id}
        applied = await self.node.propose(orjson.dumps(command).decode())
        task = self.node.core.tasks.tasks[task_id]
        if applied.outcome == "terminal":
            return _conflict(task_id, task.state)
        return Reply(200, task.to_json())


def _conflict(task_id: int, state: str) -> Reply:
    message = f"task {task_id} is already {state}"
    return Reply(409, {"error": {"code": "conflict", "message": message}})


async def wait_terminal(node: Node, task_id: int, seconds: float) -> None:
    """Long-poll: return once the task is terminal here, or after `seconds`."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        task = node.core.tasks.get(task_id)
        if task is None or task.state in TERMINAL:
            return
        await node.wait_changed(left)
    await asyncio.sleep(0)
