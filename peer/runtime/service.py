"""Client writes: submit and cancel through the leader, forwarded from followers.

A write is handled by the ready leader, which turns it into one log command, proposes
it and answers once the entry is applied (so once a majority has it on disk). A
follower hands the write to its `Forwarder`, which sends it to the leader together with
the other writes that arrived meanwhile. With no ready leader within `submit_wait` the
answer is 503 with `Retry-After`. Every write carries a request id (`rid`) that the task
table remembers, so a write retried inside the cluster never creates a task twice.
Reads are local (see `peer.runtime.api`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from peer.protocol.commands import Cancel, Submit, TaskSpec
from peer.protocol.records import TERMINAL, Applied, Task, forgotten_json
from peer.runtime.forwarding import Answer, Forwarder
from peer.runtime.member_writes import MEMBER_OPS, write_member
from peer.runtime.node import DiskRefused, LeadershipLost, Node, NotLeader
from peer.runtime.schedule_writes import SCHEDULE_OPS, schedule_settled, write_schedule
from peer.runtime.task_writes import TASK_OPS, write_task_op
from peer.runtime.validation import BadRequest

log = logging.getLogger(__name__)

FORWARDED_WAIT = 0.5  # seconds a forwarded write waits for this peer to lead
ERROR_FIELD = "X-Error-Field"  # response header: the request field a 400 refuses
HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
MAX_LONG_POLLS = 256  # `GET /tasks/{id}?wait=` requests one peer holds at once
DISK_RETRY_AFTER = "5"  # seconds a client is told to wait while the disk refuses writes


CATCH_UP = "catch_up"  # a follower asks for the log now (`WriteService.catch_up`)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: Any
    headers: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Write:
    """A checked client write: `submit` (specs, and for a batch the request order of
    each spec), `cancel` (task_id), or a schedule's `schedule_put` (schedule, `flag`:
    replace), `schedule_delete` (name) or `schedule_pause` (name, `flag`: paused)."""

    op: str
    specs: list[dict[str, Any]] = field(default_factory=list)
    order: list[int] | None = None
    task_id: int = 0
    rid: str = field(default_factory=lambda: uuid.uuid4().hex)
    schedule: dict[str, Any] | None = None
    name: str = ""
    flag: bool = False
    origin: int | None = None  # the follower that forwarded it (not sent: the signer)
    admin: bool = True  # whether its token may touch shell tasks (retry, requeue)

    def to_json(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "specs": self.specs,
            "order": self.order,
            "task_id": self.task_id,
            "rid": self.rid,
            "schedule": self.schedule,
            "name": self.name,
            "flag": self.flag,
            "admin": self.admin,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Write:
        return cls(
            data["op"],
            data["specs"],
            data["order"],
            data["task_id"],
            data["rid"],
            data.get("schedule"),
            data.get("name", ""),
            data.get("flag", False),
            admin=data.get("admin") is True,
        )


def unavailable(message: str) -> Reply:
    return Reply(503, {"error": {"code": "unavailable", "message": message}}, {"Retry-After": "1"})


def disk_refused_reply(exc: DiskRefused) -> Reply:
    """503 while this leader's disk refuses writes: `disk_full` when it is out of space
    (SQLite's SQLITE_FULL, or ENOSPC), `disk_error` for any other refusal."""
    full = "full" in exc.reason or "No space" in exc.reason
    outcome = (
        "the write may still be applied once the disk takes writes again (retry with its key)"
        if exc.proposed
        else "nothing was changed"
    )
    message = f"this peer cannot write to its disk ({exc.reason}); {outcome}"
    body = {"error": {"code": "disk_full" if full else "disk_error", "message": message}}
    return Reply(503, body, {"Retry-After": DISK_RETRY_AFTER})


class LimitReached(Exception):
    """A request over one of the peer's limits, with its answer (`peer.runtime.server`
    turns it into the response)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.body["error"]["message"])
        self.reply = reply


def error_reply(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}})


def bad_request_reply(exc: BadRequest) -> Reply:
    """400 naming the refused field twice: in the body's `error.field` and in the
    `X-Error-Field` header."""
    body = {"error": {"code": "bad_request", "message": str(exc), "field": exc.field}}
    return Reply(400, body, {ERROR_FIELD: header_field(exc.field)})


def header_field(field: str) -> str:
    """`field` as a header value: a field named by the client (an unknown query
    parameter) may hold control characters or CR/LF, which a header must not carry, so
    anything but printable ASCII is percent-encoded (`%` too, to keep it unambiguous)."""
    return quote(field, safe=HEADER_SAFE)


def forwarded_reply(status: int, body: Any) -> Reply:
    """The leader's answer to a forwarded write, with the header its body names (the
    forwarding carries status and body only)."""
    error = body.get("error") if isinstance(body, dict) else None
    field = error.get("field") if isinstance(error, dict) else None
    return Reply(
        status, body, {ERROR_FIELD: header_field(field)} if isinstance(field, str) else None
    )


class WriteService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.forwarder = Forwarder(node)
        self._asking: asyncio.Task[Any] | None = None  # a catch_up on its way to the leader

    async def close(self) -> None:
        if self._asking is not None:
            self._asking.cancel()
        await self.forwarder.close()

    async def write(self, write: Write) -> Reply:
        """Carry out `write` here when leading, else through the leader.

        A write forwarded to this peer waits only briefly for it to be a ready leader:
        if it is not (it just stepped down), the sender hears 503 soon enough to try the
        new leader within its own `submit_wait`.
        """
        forwarded = write.origin is not None
        wait = FORWARDED_WAIT if forwarded else self.node.config.submit_wait
        deadline = time.monotonic() + min(wait, self.node.config.submit_wait)
        while True:
            core = self.node.core
            try:
                if core.is_ready_leader:
                    return await self._execute(write)
            except (NotLeader, LeadershipLost):
                pass  # lost the lead mid-request; the rid makes a retry safe
            except DiskRefused as exc:
                return disk_refused_reply(exc)
            leader = core.leader
            if not forwarded and leader is not None and leader != self.node.id:
                answer = await self.forwarder.forward(leader, write.to_json(), deadline)
                if answer is not None and answer[0] != 503:
                    status, body, applied = answer
                    if applied is not None:  # reads here wait for it (`Node.caught_up`)
                        self.node.read_after(applied)
                    elif write.op in SCHEDULE_OPS:  # (a leader of an earlier version)
                        await self._settle(lambda: schedule_settled(self.node, write), deadline)
                    elif write.op == "submit":
                        await self._catch_up(status, body, deadline)
                    return forwarded_reply(status, body)
            left = deadline - time.monotonic()
            if left <= 0:
                return unavailable("no ready leader; retry later")
            await self.node.wait_changed(min(left, 0.05))

    async def catch_up(self, timeout: float) -> None:
        """Hold a read until this peer has applied every write acknowledged through it
        (at most `timeout` seconds): a follower that is a spare asks the leader for the
        log now rather than waiting for its next heartbeat."""
        leader = self.node.core.leader
        asking = self._asking
        if (
            self.node.behind()
            and leader is not None
            and leader != self.node.id
            and (asking is None or asking.done())
        ):  # (one request at a time, whatever the number of reads waiting)
            deadline = time.monotonic() + timeout
            self._asking = asyncio.create_task(self._ask_for_log(leader, deadline))
        await self.node.caught_up(timeout)

    async def confirm(self, timeout: float) -> None:
        """Hold a read of something this follower has not seen (a task id past its
        newest) until it has applied what the leader had applied when asked, at most
        `timeout` seconds: its "not found" is then not one that a write acknowledged
        elsewhere before the read had already made wrong. A no-op when leading or when
        no leader is known (the read is served as it stands)."""
        leader = self.node.core.leader
        if leader is None or leader == self.node.id:
            return
        deadline = time.monotonic() + timeout
        answer = await self._ask_for_log(leader, deadline)
        if answer is not None and answer[0] == 200 and isinstance(answer[2], int):
            await self.node.applied_through(answer[2], deadline - time.monotonic())

    async def _ask_for_log(self, leader: int, deadline: float) -> Answer | None:
        """A forwarded `catch_up`: the leader sends this peer the log now (`Hurry`) and
        answers with the index it had applied."""
        return await self.forwarder.forward(leader, Write(CATCH_UP, rid="").to_json(), deadline)

    async def _settle(self, done: Callable[[], bool], deadline: float) -> None:
        """Wait (bounded) until `done()` holds here: a forwarded write applied locally."""
        while not done() and (left := deadline - time.monotonic()) > 0:
            await self.node.wait_changed(left)

    async def _catch_up(self, status: int, body: Any, deadline: float) -> None:
        """After a submit forwarded to a leader that gives no index, wait (bounded)
        until this peer has applied it too, so the client can read its write back from
        the peer it wrote to."""
        if status not in (200, 201) or not isinstance(body, dict):
            return
        tasks = body.get("tasks", [body])
        newest = max((t.get("id", 0) for t in tasks if isinstance(t, dict)), default=0)
        table = self.node.core.tasks
        while newest >= table.next_id and (left := deadline - time.monotonic()) > 0:
            await self.node.wait_changed(left)

    async def _execute(self, write: Write) -> Reply:
        try:
            if write.op == "submit":
                return await self._submit(write)
            if write.op == CATCH_UP and write.origin is not None:
                self.node.hurry(write.origin)
                return Reply(200, None)
            if write.op == "cancel":
                return await self._cancel(write)
            if write.op in SCHEDULE_OPS:
                status, body = await write_schedule(self.node, write)
                return Reply(status, body)
            if write.op in TASK_OPS:
                status, body = await write_task_op(self.node, write)
                return Reply(status, body)
            if write.op in MEMBER_OPS:
                status, body = await write_member(self.node, write)
                return Reply(status, body)
        except BadRequest as exc:
            return bad_request_reply(exc)
        return error_reply(400, "bad_request", f"op: unknown write {write.op!r}")

    async def _submit(self, write: Write) -> Reply:
        table = self.node.core.tasks
        for i, spec in enumerate(write.specs):
            where = "depends_on" if write.order is None else f"tasks[{write.order[i]}].depends_on"
            for dep in spec.get("depends_on", ()):
                if table.get(dep) is None:
                    raise BadRequest(where, f"no task with id {dep}")
        specs = tuple(TaskSpec.from_json(spec) for spec in write.specs)
        applied = await self.node.propose(Submit(time.time(), specs, write.rid))
        return self._submitted(applied, write.order, specs)

    def _submitted(
        self, applied: Applied, order: list[int] | None, specs: tuple[TaskSpec, ...]
    ) -> Reply:
        table = self.node.core.tasks
        pairs = zip(applied.task_ids, specs, strict=True)
        tasks = [_answer(table.tasks.get(i), i, spec) for i, spec in pairs]
        status = 201 if any(applied.created) else 200
        if order is None:
            return Reply(status, tasks[0])
        in_request_order: list[Any] = [None] * len(tasks)
        for task, position in zip(tasks, order, strict=True):
            in_request_order[position] = task
        return Reply(status, {"tasks": in_request_order})

    async def _cancel(self, write: Write) -> Reply:
        task = self.node.core.tasks.get(write.task_id)
        if task is None:
            return error_reply(404, "not_found", f"no task {write.task_id}")
        if task.state in TERMINAL:
            return error_reply(409, "conflict", f"task {task.id} is already {task.state}")
        applied = await self.node.propose(Cancel(time.time(), write.task_id))
        if applied.outcome == "terminal":
            return error_reply(409, "conflict", f"task {task.id} is already {task.state}")
        return Reply(200, task.to_json())


def _answer(task: Task | None, task_id: int, spec: TaskSpec) -> dict[str, Any]:
    """A submitted task's JSON; a key whose task retention forgot names it still."""
    return task.to_json() if task is not None else forgotten_json(task_id, spec.kind, spec.key)


_long_polls: weakref.WeakKeyDictionary[Node, int] = weakref.WeakKeyDictionary()


def long_polls(node: Node) -> int:
    """The long polls waiting on `node` now."""
    return _long_polls.get(node, 0)


async def wait_terminal(node: Node, task_id: int, seconds: float) -> None:
    """Long-poll: return once the task is terminal here, or after `seconds`.

    At most `MAX_LONG_POLLS` wait on one peer at once; one more raises `LimitReached`
    (503 `too_many_waiters` with `Retry-After`), unless it has nothing to wait for.
    """
    task = node.core.tasks.get(task_id)
    if task is None or task.state in TERMINAL or seconds <= 0:
        return
    held = long_polls(node)
    if held >= MAX_LONG_POLLS:
        message = f"{held} long polls already wait on this peer (at most {MAX_LONG_POLLS})"
        body = {"error": {"code": "too_many_waiters", "message": message}}
        raise LimitReached(Reply(503, body, {"Retry-After": "1"}))
    _long_polls[node] = held + 1
    try:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            task = node.core.tasks.get(task_id)
            if task is None or task.state in TERMINAL:
                return
            await node.wait_changed(left)
    finally:
        _long_polls[node] -= 1
