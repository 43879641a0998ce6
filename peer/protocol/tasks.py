"""The task state machine: applies committed log entries, in order, to the task table.

Deterministic: every peer that applies the same entries holds the same table. Ids are
given in apply order (1, 2, 3, ...); every timestamp comes from the entry (the leader's
clock, written in when it proposed it), never from the local clock. Pure: no I/O.

Commands (the JSON text of an entry):
  {"op": "noop"}
  {"op": "assign", "at": T, "items": [[id, attempt, worker, incarnation], ...]}
  {"op": "finish", "at": T, "items": [[id, attempt, ok, result or error, retry_at], ...]}
  {"op": "submit", "at": T, "rid": R, "tasks": [spec, ...]}   specs may name each
      other by "ref"; a request id R seen before returns the tasks it made then
  {"op": "cancel", "at": T, "id": N}

An `assign` counts only for a ready task and the next attempt; a `finish` only for the
running attempt it names, so a slow or resurrected worker cannot overwrite a newer one.
A failed attempt with attempts left becomes `scheduled` at the `retry_at` the leader
wrote (its backoff, jitter included); with none left, `failed`, and its dependents are
cancelled. A success releases dependents whose dependencies have all succeeded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
READY = frozenset({"queued", "scheduled"})
STATES = ("blocked", "scheduled", "queued", "running", "succeeded", "failed", "cancelled")


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
    state: str = "queued"
    attempt: int = 0
    worker: int | None = None
    incarnation: int = 0  # the worker's incarnation when it was assigned
    result: Any = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None

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
        }


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one entry did: the tasks it names, and whether each is new."""

    index: int
    op: str
    task_ids: tuple[int, ...] = ()
    created: tuple[bool, ...] = ()
    outcome: str = "ok"


@dataclass
class TaskTable:
    tasks: dict[int, Task] = field(default_factory=dict)
    by_key: dict[str, int] = field(default_factory=dict)
    by_rid: dict[str, tuple[int, ...]] = field(default_factory=dict)
    dependents: dict[int, list[int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    next_id: int = 1
    applied_index: int = 0
    running: dict[int, set[int]] = field(default_factory=dict)  # worker -> task ids
    became_ready: list[int] = field(default_factory=list)  # drained by the scheduler
    ended: list[tuple[int, int]] = field(default_factory=list)  # (task, attempt) stopped

    # ------------------------------------------------------------------ apply

    def apply(self, index: int, command: str) -> Applied:
        """Apply one committed command. A malformed one is skipped, the same way on
        every peer (it is deterministic), rather than stopping the peer."""
        self.applied_index = index
        try:
            return self._apply(index, orjson.loads(command))
        except (KeyError, TypeError, ValueError, AttributeError):
            return Applied(index, "invalid", outcome="invalid")

    def _apply(self, index: int, data: dict[str, Any]) -> Applied:
        _check_shape(data)  # all or nothing: a malformed command changes no task
        op = data.get("op")
        if op == "submit":
            seen = self.by_rid.get(data.get("rid", ""))
            if seen is not None:  # the same request, retried inside the cluster
                return Applied(index, "submit", seen, (False,) * len(seen))
            applied = self._submit(index, data["at"], data["tasks"])
            if data.get("rid"):
                self.by_rid[data["rid"]] = applied.task_ids
            return applied
        if op == "cancel":
            return self._cancel(index, data["at"], data["id"])
        if op == "assign":
            return self._assign(index, data["at"], data["items"])
        if op == "finish":
            return self._finish(index, data["at"], data["items"])
        return Applied(index, "noop")

    def _assign(self, index: int, at: float, items: list[list[Any]]) -> Applied:
        done = []
        for task_id, attempt, worker, incarnation in items:
            task = self.tasks.get(task_id)
            if task is None or task.state not in READY or attempt != task.attempt + 1:
                continue
            self._set_state(task, "running")
            task.attempt, task.worker, task.incarnation = attempt, worker, incarnation
            task.started_at, task.finished_at = at, None
            self.running.setdefault(worker, set()).add(task_id)
            done.append(task_id)
        return Applied(index, "assign", tuple(done))

    def _finish(self, index: int, at: float, items: list[list[Any]]) -> Applied:
        done = []
        for task_id, attempt, ok, value, retry_at in items:
            task = self.tasks.get(task_id)
            if task is None or task.state != "running" or attempt != task.attempt:
                continue  # a stale attempt, or already ended
            self._stop_running(task)
            done.append(task_id)
            if ok:
                self._set_state(task, "succeeded")
                task.result, task.error, task.finished_at = value, None, at
                self._release_dependents(task)
            elif task.attempt < task.max_attempts:
                self._set_state(task, "scheduled")
                task.error, task.not_before = str(value), float(retry_at)
                self.became_ready.append(task.id)
            else:
                self._set_state(task, "failed")
                task.error, task.finished_at = str(value), at
                for child in self.dependents.get(task.id, ()):
                    reason = f"dependency {task.id} failed"
                    self._cancel_with_dependents(self.tasks[child], at, reason)
        return Applied(index, "finish", tuple(done))

    def _stop_running(self, task: Task) -> None:
        if task.worker is not None:
            self.running.get(task.worker, set()).discard(task.id)
        self.ended.append((task.id, task.attempt))

    def _release_dependents(self, task: Task) -> None:
        for child_id in self.dependents.get(task.id, ()):
            child = self.tasks[child_id]
            if child.state == "blocked" and all(
                self.tasks[d].state == "succeeded" for d in child.depends_on if d in self.tasks
            ):
                self._set_state(child, "queued")
                self.became_ready.append(child.id)

    def _submit(self, index: int, at: float, specs: list[dict[str, Any]]) -> Applied:
        refs: dict[str, int] = {}
        ids, created = [], []
        for spec in specs:
            existing = self.by_key.get(spec["key"]) if spec.get("key") else None
            if existing is not None:
                ids.append(existing)
                created.append(False)
                if spec.get("ref"):
                    refs[spec["ref"]] = existing
                continue
            task = self._new_task(at, spec, refs)
            if spec.get("ref"):
                refs[spec["ref"]] = task.id
            ids.append(task.id)
            created.append(True)
        return Applied(index, "submit", tuple(ids), tuple(created))

    def _new_task(self, at: float, spec: dict[str, Any], refs: dict[str, int]) -> Task:
        deps = tuple(spec.get("depends_on", ())) + tuple(refs[r] for r in spec.get("after", ()))
        task = Task(
            id=self.next_id,
            kind=spec["kind"],
            args=spec.get("args"),
            queue=spec.get("queue", "default"),
            priority=spec.get("priority", 0),
            max_attempts=spec.get("max_attempts", 3),
            timeout=spec.get("timeout"),
            depends_on=deps,
            key=spec.get("key"),
            submitted_at=at,
            not_before=at + spec.get("delay", 0.0),
        )
        self.next_id += 1
        self.tasks[task.id] = task
        if task.key:
            self.by_key[task.key] = task.id
        for dep in deps:
            self.dependents.setdefault(dep, []).append(task.id)
        task.state = self._initial_state(task)
        self.counts[task.state] += 1
        if task.state in READY:
            self.became_ready.append(task.id)
        if task.state == "blocked" and self._dependency_failed(task):
            self._cancel_with_dependents(task, at, "a dependency failed or was cancelled")
        return task

    def _initial_state(self, task: Task) -> str:
        deps = [self.tasks[d] for d in task.depends_on if d in self.tasks]
        if any(d.state != "succeeded" for d in deps):
            return "blocked"
        return "scheduled" if task.not_before > task.submitted_at else "queued"

    def _dependency_failed(self, task: Task) -> bool:
        return any(self.tasks[d].state in ("failed", "cancelled") for d in task.depends_on)

    def _cancel(self, index: int, at: float, task_id: int) -> Applied:
        task = self.tasks.get(task_id)
        if task is None:
            return Applied(index, "cancel", (task_id,), outcome="missing")
        if task.state in TERMINAL:
            return Applied(index, "cancel", (task_id,), outcome="terminal")
        self._cancel_with_dependents(task, at, "cancelled")
        return Applied(index, "cancel", (task_id,))

    def _cancel_with_dependents(self, task: Task, at: float, reason: str) -> None:
        pending = [(task, reason)]
        while pending:
            current, why = pending.pop()
            if current.state in TERMINAL:
                continue
            if current.state == "running":
                self._stop_running(current)
            self._set_state(current, "cancelled")
            current.error, current.finished_at = why, at
            for child in self.dependents.get(current.id, ()):
                pending.append((self.tasks[child], f"dependency {current.id} was cancelled"))

    def _set_state(self, task: Task, state: str) -> None:
        self.counts[task.state] -= 1
        task.state = state
        self.counts[state] += 1

    # ------------------------------------------------------------------ query

    def get(self, task_id: int) -> Task | None:
        return self.tasks.get(task_id)

    def list(
        self, state: str | None, queue: str | None, limit: int, after: int
    ) -> tuple[list[Task], int | None]:
        """Tasks with id > `after` matching the filters, oldest first, and the next cursor."""
        out: list[Task] = []
        for task_id in range(after + 1, self.next_id):
            task = self.tasks[task_id]
            if (state is None or task.state == state) and (queue is None or task.queue == queue):
                out.append(task)
                if len(out) == limit:
                    more = task_id + 1 < self.next_id
                    return out, task_id if more else None
        return out, None


_ITEM_TYPES = {
    "assign": (int, int, int, int),
    "finish": (int, int, bool, object, float | int),
}


def _check_shape(data: dict[str, Any]) -> None:
    """Raise ValueError unless every part of the command has the shape applying needs."""
    op = data.get("op")
    if op in ("submit", "cancel", *_ITEM_TYPES) and not isinstance(data.get("at"), float | int):
        raise ValueError("at")
    if op == "submit":
        refs: set[str] = set()
        for spec in data["tasks"]:
            if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str):
                raise ValueError("tasks")
            if not refs.issuperset(spec.get("after", ())):
                raise ValueError("after")
            refs.add(spec.get("ref", ""))
    elif op == "cancel" and not isinstance(data.get("id"), int):
        raise ValueError("id")
    elif op in _ITEM_TYPES:
        types = _ITEM_TYPES[op]
        for item in data["items"]:
            if len(item) != len(types):
                raise ValueError("items")
            if not all(isinstance(v, t) for v, t in zip(item, types, strict=True)):
                raise ValueError("items")
