"""What a task is, as every peer's table holds it: `TaskState`, `Task` (its JSON for the
API), and `Applied` (what applying one log entry changed). Pure data; the rules that
change tasks are the task table's (`peer.protocol.tasks`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class TaskState(StrEnum):
    BLOCKED = "blocked"  # waiting on dependencies
    SCHEDULED = "scheduled"  # not before a time (a delay, a retry's backoff)
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # attempts exhausted
    CANCELLED = "cancelled"


TERMINAL = frozenset({TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED})
READY = frozenset({TaskState.QUEUED, TaskState.SCHEDULED})
STATES = tuple(s.value for s in TaskState)


@dataclass(slots=True)
class Attempt:
    """One attempt's record: where and when it ran, and how it ended (None while it
    runs). A slotted record, not a dict: every task held keeps one per attempt."""

    attempt: int
    worker: int
    started_at: float
    finished_at: float | None = None
    outcome: str | None = None
    error: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attempt": self.attempt,
            "worker": self.worker,
            "started_at": self.started_at,
        }
        if self.outcome is not None:  # (ended)
            out["finished_at"], out["outcome"], out["error"] = (
                self.finished_at,
                self.outcome,
                self.error,
            )
        return out


@dataclass(slots=True)
class Task:
    id: int
    kind: str
    args: Any
    queue: str
    priority: int
    max_attempts: int
    timeout: float | None
    depends_on: tuple[int, ...]
    key: str | None
    submitted_at: float
    not_before: float
    state: TaskState = TaskState.QUEUED
    attempt: int = 0
    worker: int | None = None
    incarnation: int = 0  # the worker's incarnation when it was assigned
    result: Any = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    budget: int = 0  # attempts a retry grants (its first max_attempts)
    # each attempt in order, and the tasks that depend on this one: a list once there is
    # one, the empty tuple until then (most tasks have no dependents, and a table of
    # 100,000 tasks then makes and holds 200,000 fewer lists: about 1 us less to apply a
    # submitted task, and fewer objects for the collector to walk)
    attempts: list[Attempt] | tuple[()] = ()
    dependents: list[int] | tuple[()] = ()
    schedule: str | None = None  # the schedule whose tick made it
    due: float | None = None  # ... that tick's due time (lateness: submitted_at - due)
    trimmed: bool = False  # retention dropped its args, result and attempt records

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "args": self.args,
            "queue": self.queue,
            "priority": self.priority,
            "state": self.state,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "worker": self.worker,
            "incarnation": self.incarnation,
            "result": self.result,
            "error": self.error,
            "depends_on": list(self.depends_on),
            "key": self.key,
            "submitted_at": self.submitted_at,
            "not_before": self.not_before,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "schedule": self.schedule,
            "due": self.due,
            "lateness": None if self.due is None else self.submitted_at - self.due,
            "attempts": [a.to_json() for a in self.attempts] if self.attempts else [],
            "dependents": list(self.dependents),
            "trimmed": self.trimmed,
        }


FORGOTTEN = "forgotten"  # the state a forgotten task's key answers with


def forgotten_json(task_id: int, kind: str, key: str | None) -> dict[str, Any]:
    """What a submit repeating the key of a task retention forgot answers: its id and
    state `forgotten`, in a task's shape (the rest is gone)."""
    stub = Task(task_id, kind, None, "", 0, 0, None, (), key, 0.0, 0.0, trimmed=True)
    return {**stub.to_json(), "state": FORGOTTEN}


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one entry did: the tasks it names (and whether each is new), the
    tasks it made ready to run, the attempts it ended (finished or cancelled), and the
    tasks a submit started at once (`Placement`)."""

    index: int
    op: str
    task_ids: tuple[int, ...] = ()
    created: tuple[bool, ...] = ()
    outcome: str = "ok"
    ready: tuple[int, ...] = ()
    ended: tuple[tuple[int, int], ...] = ()
    started: tuple[int, ...] = ()
