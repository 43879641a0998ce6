"""The task state machine: applies committed log entries, in order, to the task table.

Deterministic: every peer that applies the same entries holds the same table. Ids are
given in apply order (1, 2, 3, ...); every timestamp comes from the entry (the leader's
clock, written in when it proposed it), never from the local clock. Pure: no I/O.

Entries hold typed commands (`peer.protocol.commands`): `Submit` (specs may name each
other by `ref`; a request id seen before returns the tasks it made then), `Assign`,
`Finish`, `Cancel`, `Noop`. A malformed entry is skipped whole, the same way on every
peer, and changes no task.

An `Assign` counts only for a ready task and the next attempt; a `Finish` only for the
running attempt it names, so a slow or resurrected worker cannot overwrite a newer one.
A failed attempt with attempts left becomes `scheduled` at the `retry_at` the leader
wrote (its backoff, jitter included); with none left, `failed`, and its dependents are
cancelled. A success releases dependents whose dependencies have all succeeded.

Applying returns what changed (`Applied`: the tasks named, which became ready, which
attempts ended), so nothing is left in the table for another module to drain.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from itertools import islice
from typing import Any

from peer.protocol.commands import (
    Assign,
    Assignment,
    Cancel,
    Command,
    CommandError,
    Drain,
    Finish,
    Forget,
    Members,
    Noop,
    Outcome,
    Placement,
    Retry,
    ScheduleDelete,
    SchedulePause,
    SchedulePut,
    ScheduleSkip,
    Submit,
    TaskSpec,
    Trim,
    decode_command,
)
from peer.protocol.configuration import Configuration
from peer.protocol.queues import RateBook
from peer.protocol.records import READY, STATES, TERMINAL, Applied, Attempt, Task, TaskState
from peer.protocol.schedules import ScheduleBook
from peer.protocol.segments import Segment
from peer.protocol.settings import QueuePolicy
from peer.protocol.stats import TaskStats, failure_reason

REBUILD_AFTER = 20000  # dict entries deleted (beyond the tasks held) before a rebuild


def _drop_older(ordered: dict[str, Any], when: Callable[[Any], float], before: float) -> list[str]:
    """Drop the leading entries of an insertion-ordered dict whose time is before
    `before` (they were added in log order, so the old ones lead); their keys."""
    dropped = []
    for key, value in ordered.items():
        if when(value) >= before:
            break
        dropped.append(key)
    for key in dropped:
        del ordered[key]
    return dropped


def _ended(task: Task, at: float, outcome: str, error: Any) -> None:
    """Close the record of the task's running attempt."""
    if task.attempts and (last := task.attempts[-1]).attempt == task.attempt:
        last.finished_at, last.outcome, last.error = at, outcome, error


class TaskTable:
    """Every task, by id, and the indexes applying needs (keys, request ids, dependents,
    running attempts per worker, counts per state)."""

    chunk_bits = 11  # a snapshot keeps its task rows per 2**chunk_bits ids

    def __init__(self, queues: Mapping[str, QueuePolicy] | None = None) -> None:
        """`queues`: the per-queue policies; the table keeps the start budget of those
        with a `rate` (`RateBook`), from the applied assignments."""
        self.tasks: dict[int, Task] = {}
        self.by_key: dict[str, int] = {}
        self.by_rid: dict[str, tuple[int, ...]] = {}
        self.counts: dict[str, int] = dict.fromkeys(STATES, 0)  # plain str keys (JSON)
        self.queue_counts: dict[str, dict[str, int]] = {}  # queue -> state -> tasks
        self.next_id = 1
        self.applied_index = 0
        self.log_bytes = 0  # characters of every entry applied (what snapshots are timed by)
        self.running: dict[int, set[int]] = {}  # worker -> task ids
        self.schedules = ScheduleBook()
        self.rates = RateBook(queues or {})
        self.stats = TaskStats()
        self.drained: set[int] = set()  # peers that get no new assignments
        self.configuration: Configuration | None = None  # the last Members applied
        # retention: per queue, finished tasks whole in the order they ended and
        # trimmed ones in the order they were trimmed (with when); keys of forgotten
        # tasks (with when), when each request id was seen; the lowest id maybe held
        self.finished: dict[str, dict[int, None]] = {}
        self.trimmed: dict[str, dict[int, float]] = {}
        self.forgotten_keys: dict[str, int] = {}  # key -> the id it named
        # (when, how many) keys each Forget added to forgotten_keys, oldest first
        self.forgotten_times: deque[tuple[float, int]] = deque()
        self.rid_times: dict[str, float] = {}
        self.forgotten = 0
        self.low_id = 1
        self._dropped = 0  # entries deleted from the big dicts since they were last rebuilt
        self._names: dict[str, str] = {}  # one copy of each kind and queue name
        self.running_by_queue: dict[str, int] = {}
        # what the entry being applied changes; handed out in its `Applied`, then reset
        self._ready: list[int] = []
        self._ended: list[tuple[int, int]] = []
        # the snapshot's deflated task rows, per chunk of ids (`peer.protocol.snapshot`);
        # a change to a task drops its chunk's (`_touch`)
        self.snapshot_segments: dict[int, Segment] = {}

    # ------------------------------------------------------------------ apply

    def apply(self, index: int, text: str) -> Applied:
        """Apply one committed entry's text. A malformed one is skipped whole, the same
        way on every peer (it is deterministic), rather than stopping the peer."""
        self.applied_index = index
        try:
            command = decode_command(text)
        except CommandError:
            return Applied(index, "invalid", outcome="invalid")
        return self.apply_command(index, command)

    def apply_typed(self, index: int, command: Command) -> Applied:
        """Apply one committed entry given as the command its text encodes."""
        self.applied_index = index
        return self.apply_command(index, command)

    def apply_command(self, index: int, command: Command) -> Applied:
        self._ready, self._ended = [], []
        applied = self._dispatch(index, command)
        if self._ready or self._ended:
            applied = Applied(
                applied.index,
                applied.op,
                applied.task_ids,
                applied.created,
                applied.outcome,
                tuple(self._ready),
                tuple(self._ended),
                applied.started,
            )
        self._ready, self._ended = [], []
        return applied

    def _dispatch(self, index: int, command: Command) -> Applied:
        match command:
            case Submit():
                return self._submit_once(index, command)
            case Assign():
                return self._assign(index, command.at, command.items)
            case Finish():
                return self._finish(index, command.at, command.items)
            case Cancel():
                return self._cancel(index, command.at, command.task)
            case Noop():
                return Applied(index, "noop")
            case Retry():
                return self._retry(index, command.at, command.tasks)
            case Drain():
                (self.drained.add if command.drained else self.drained.discard)(command.peer)
                return Applied(index, "drain")
            case Trim():
                return Applied(index, "trim", self._trim(command.at, command.tasks))
            case Forget():
                return Applied(index, "forget", self._forget(command))
            case Members():
                return self._members(index, command)
            case _:
                return self._schedule_command(index, command)

    def _members(self, index: int, command: Members) -> Applied:
        """A new configuration, applied only over the one it was made from (else the
        entry changes nothing: the same on every peer)."""
        current = 0 if self.configuration is None else self.configuration.index
        if command.base != current:
            return Applied(index, "members", outcome="conflict")
        self.configuration = replace(command.configuration, index=index)
        return Applied(index, "members")

    def _schedule_command(self, index: int, command: Command) -> Applied:
        match command:
            case SchedulePut():
                return Applied(index, "schedule_put", outcome=self.schedules.put(command))
            case ScheduleDelete():
                found = self.schedules.delete(command.name)
                return Applied(index, "schedule_delete", outcome="ok" if found else "missing")
            case SchedulePause():
                found = self.schedules.pause(command)
                return Applied(index, "schedule_pause", outcome="ok" if found else "missing")
            case ScheduleSkip():
                found = self.schedules.skip(command)
                return Applied(index, "schedule_skip", outcome="ok" if found else "missing")
        return Applied(index, "invalid", outcome="invalid")

    def _submit_once(self, index: int, command: Submit) -> Applied:
        seen = self.by_rid.get(command.rid) if command.rid else None
        if seen is not None:  # the same request, retried inside the cluster
            return Applied(index, "submit", seen, (False,) * len(seen))
        applied = self._submit(index, command.at, command.tasks, command.place)
        if command.rid:
            self.by_rid[command.rid] = applied.task_ids
            self.rid_times[command.rid] = command.at
        return applied

    def _assign(self, index: int, at: float, items: tuple[Assignment, ...]) -> Applied:
        done = []
        for item in items:
            task = self.tasks.get(item.task)
            if task is None or task.state not in READY or item.attempt != task.attempt + 1:
                continue
            self._start(task, at, item.attempt, item.worker, item.incarnation)
            done.append(task.id)
        return Applied(index, "assign", tuple(done))

    def _start(self, task: Task, at: float, attempt: int, worker: int, incarnation: int) -> None:
        """A ready task's attempt `attempt` runs on `worker` from `at`."""
        self._set_state(task, TaskState.RUNNING)
        task.attempt, task.worker, task.incarnation = attempt, worker, incarnation
        self.stats.wait_seconds.observe(at - task.not_before)
        task.started_at, task.finished_at = at, None
        if isinstance(task.attempts, list):
            task.attempts.append(Attempt(attempt, worker, at))
        else:
            task.attempts = [Attempt(attempt, worker, at)]
        self.running.setdefault(worker, set()).add(task.id)
        self.running_by_queue[task.queue] = self.running_by_queue.get(task.queue, 0) + 1
        self.rates.started(task.queue, at)

    def _finish(self, index: int, at: float, items: tuple[Outcome, ...]) -> Applied:
        done = []
        for item in items:
            task = self.tasks.get(item.task)
            if task is None or task.state is not TaskState.RUNNING or item.attempt != task.attempt:
                continue  # a stale attempt, or already ended
            self._stop_running(task)
            done.append(task.id)
            _ended(task, at, "succeeded" if item.ok else "failed", None if item.ok else item.value)
            self.stats.run_seconds.observe(at - (task.started_at or at))
            if not item.ok:
                self.stats.attempts_failed[failure_reason(str(item.value))] += 1
            if item.ok:
                self._set_state(task, TaskState.SUCCEEDED)
                task.result, task.error, task.finished_at = item.value, None, at
                self._release_dependents(task)
            elif task.attempt < task.max_attempts:
                self._set_state(task, TaskState.SCHEDULED)
                task.error, task.not_before = str(item.value), item.retry_at
                self._ready.append(task.id)
            else:
                self._set_state(task, TaskState.FAILED)
                task.error, task.finished_at = str(item.value), at
                for child in task.dependents:
                    reason = f"dependency {task.id} failed"
                    self._cancel_with_dependents(self.tasks[child], at, reason)
        return Applied(index, "finish", tuple(done))

    def _stop_running(self, task: Task) -> None:
        if task.worker is not None:
            self.running.get(task.worker, set()).discard(task.id)
        self.running_by_queue[task.queue] -= 1
        self._ended.append((task.id, task.attempt))

    def running_in(self, queue: str) -> int:
        """Attempts of `queue` running now (cluster-wide, as the log says)."""
        return self.running_by_queue.get(queue, 0)

    def _release_dependents(self, task: Task) -> None:
        for child_id in task.dependents:
            child = self.tasks[child_id]
            if child.state is TaskState.BLOCKED and all(
                self.tasks[d].state is TaskState.SUCCEEDED
                for d in child.depends_on
                if d in self.tasks
            ):
                self._set_state(child, TaskState.QUEUED)
                self._ready.append(child.id)

    def _submit(
        self, index: int, at: float, specs: tuple[TaskSpec, ...], place: tuple[Placement, ...]
    ) -> Applied:
        refs: dict[str, int] = {}
        ids, created = [], []
        for spec in specs:
            existing = self.key_holder(spec.key) if spec.key else None
            if existing is not None:
                ids.append(existing)
                created.append(False)
                if spec.ref:
                    refs[spec.ref] = existing
                continue
            task = self._new_task(at, spec, refs)
            if spec.ref:
                refs[spec.ref] = task.id
            ids.append(task.id)
            created.append(True)
        started = self._start_placed(at, ids, created, place) if place else ()
        return Applied(index, "submit", tuple(ids), tuple(created), started=started)

    def _start_placed(
        self, at: float, ids: list[int], created: list[bool], place: tuple[Placement, ...]
    ) -> tuple[int, ...]:
        """Start the placed specs' new tasks that are queued (not delayed, blocked or
        cancelled); a placement of a spec that made no new task does nothing."""
        started = []
        for p in place:
            task = self.tasks.get(ids[p.position])
            if created[p.position] and task is not None and task.state is TaskState.QUEUED:
                self._ready.remove(task.id)  # (it runs: nothing waits for the scheduler)
                self._start(task, at, 1, p.worker, p.incarnation)
                started.append(task.id)
        return tuple(started)

    def _new_task(self, at: float, spec: TaskSpec, refs: dict[str, int]) -> Task:
        deps = (
            spec.depends_on + tuple(refs[r] for r in spec.after) if spec.after else spec.depends_on
        )
        names = self._names
        # positional, in the order of Task's fields (a batch submit makes thousands, and
        # keywords cost a sixth of the apply): id, kind, args, queue, priority,
        # max_attempts, timeout, depends_on, key, submitted_at, not_before
        task = Task(
            self.next_id,
            names.setdefault(spec.kind, spec.kind),
            spec.args,
            names.setdefault(spec.queue, spec.queue),
            spec.priority,
            spec.max_attempts,
            spec.timeout,
            deps,
            spec.key,
            at,
            at + spec.delay,
            budget=spec.max_attempts,
            schedule=spec.schedule,
            due=spec.due,
        )
        self.next_id += 1
        self.tasks[task.id] = task
        self.snapshot_segments.pop(task.id >> self.chunk_bits, None)
        self.stats.submitted[(task.queue, task.kind)] += 1
        if task.key:
            self.by_key[task.key] = task.id
        if task.schedule is not None and task.due is not None:
            self.schedules.fired(task.schedule, task.due, task.id)
        if deps:
            for dep in deps:
                parent = self.tasks.get(dep)
                if parent is None:
                    continue
                if isinstance(parent.dependents, list):
                    parent.dependents.append(task.id)
                else:
                    parent.dependents = [task.id]
                self._touch(dep)
            task.state = self._initial_state(task)
        elif task.not_before > at:
            task.state = TaskState.SCHEDULED
        self._count(task.queue, task.state, 1)
        if task.state in READY:
            self._ready.append(task.id)
        elif task.state is TaskState.BLOCKED and self._dependency_failed(task):
            self._cancel_with_dependents(task, at, "a dependency failed or was cancelled")
        return task

    def _initial_state(self, task: Task) -> TaskState:
        if task.depends_on:
            deps = [self.tasks[d] for d in task.depends_on if d in self.tasks]
            if any(d.state is not TaskState.SUCCEEDED for d in deps):
                return TaskState.BLOCKED
        return TaskState.SCHEDULED if task.not_before > task.submitted_at else TaskState.QUEUED

    def _dependency_failed(self, task: Task) -> bool:
        failed = (TaskState.FAILED, TaskState.CANCELLED)
        return any(d in self.tasks and self.tasks[d].state in failed for d in task.depends_on)

    def retry_blocker(self, task: Task) -> str | None:
        """Why `task` cannot be retried now, or None."""
        if task.trimmed:
            return f"task {task.id} was trimmed by retention (its arguments are gone)"
        if task.state not in (TaskState.FAILED, TaskState.CANCELLED):
            return f"task {task.id} is {task.state}: only failed or cancelled tasks are retried"
        for dep in task.depends_on:
            if dep in self.tasks and self.tasks[dep].state in (
                TaskState.FAILED,
                TaskState.CANCELLED,
            ):
                return f"its dependency {dep} is {self.tasks[dep].state}: retry that first"
        return None

    def _retry(self, index: int, at: float, task_ids: tuple[int, ...]) -> Applied:
        done = []
        for task_id in task_ids:
            task = self.tasks.get(task_id)
            if task is None or self.retry_blocker(task) is not None:
                continue
            task.max_attempts = task.attempt + task.budget
            task.error, task.result, task.finished_at, task.not_before = None, None, None, at
            waiting = any(
                self.tasks[d].state is not TaskState.SUCCEEDED
                for d in task.depends_on
                if d in self.tasks
            )
            self._set_state(task, TaskState.BLOCKED if waiting else TaskState.QUEUED)
            if task.state in READY:
                self._ready.append(task.id)
            done.append(task_id)
        return Applied(index, "retry", tuple(done))

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
            if current.state is TaskState.RUNNING:
                self._stop_running(current)
                _ended(current, at, "cancelled", why)
            self._set_state(current, TaskState.CANCELLED)
            current.error, current.finished_at = why, at
            for child in current.dependents:
                pending.append((self.tasks[child], f"dependency {current.id} was cancelled"))

    def _touch(self, task_id: int) -> None:
        """The task changed (came, went, or any of its fields or attempt records did):
        the snapshot's rows kept for its chunk are stale."""
        self.snapshot_segments.pop(task_id >> self.chunk_bits, None)

    def _set_state(self, task: Task, state: TaskState) -> None:
        """(Every change to a task goes with one, but for a new task's first state, a
        trim, a forget and a new dependent: those touch it themselves.)"""
        self._touch(task.id)
        self._count(task.queue, task.state, -1)
        if task.state in TERMINAL and state not in TERMINAL:  # retried
            self.finished.get(task.queue, {}).pop(task.id, None)
        task.state = state
        self._count(task.queue, state, 1)
        if state in TERMINAL:
            self.finished.setdefault(task.queue, {})[task.id] = None
            self.stats.finished[(task.queue, task.kind, state.value)] += 1
            if task.schedule is not None:
                self.schedules.ended(task.schedule, state.value)

    def _count(self, queue: str, state: TaskState, change: int) -> None:
        self.counts[state] += change
        by_state = self.queue_counts.get(queue)
        if by_state is None:
            by_state = self.queue_counts[queue] = dict.fromkeys(STATES, 0)
        by_state[state] += change

    # -------------------------------------------------------------- retention

    def _trim(self, at: float, task_ids: tuple[int, ...]) -> tuple[int, ...]:
        done = []
        for task_id in task_ids:
            task = self.tasks.get(task_id)
            if task is None or task.state not in TERMINAL or task.trimmed:
                continue
            task.args = task.result = None
            task.attempts = ()
            task.trimmed = True
            self._touch(task_id)
            self.finished.get(task.queue, {}).pop(task_id, None)
            self.trimmed.setdefault(task.queue, {})[task_id] = at
            done.append(task_id)
        return tuple(done)

    def _forget(self, command: Forget) -> tuple[int, ...]:
        done, added = [], 0
        for task_id in command.tasks:
            task = self.tasks.get(task_id)
            if task is None or task.state not in TERMINAL:
                continue
            del self.tasks[task_id]
            self._touch(task_id)
            self._count(task.queue, task.state, -1)
            self.finished.get(task.queue, {}).pop(task_id, None)
            self.trimmed.get(task.queue, {}).pop(task_id, None)
            if task.key and self.by_key.get(task.key) == task_id:
                del self.by_key[task.key]
                if task.key not in self.forgotten_keys:
                    self.forgotten_keys[task.key] = task_id
                    added += 1
            for parent_id in task.depends_on:
                parent = self.tasks.get(parent_id)
                siblings = parent.dependents if parent is not None else ()
                if isinstance(siblings, list) and task_id in siblings:
                    siblings.remove(task_id)
                    self._touch(parent_id)
            done.append(task_id)
        self.forgotten += len(done)
        if added:
            self.forgotten_times.append((command.at, added))
        self._dropped += len(done) + self._drop_forgotten_keys(command.keys_before)
        for rid in _drop_older(self.rid_times, lambda seen: seen, command.keys_before):
            self.by_rid.pop(rid, None)
            self._dropped += 1
        if self._dropped > len(self.tasks) + REBUILD_AFTER:
            self._rebuild()
        while self.low_id < self.next_id and self.low_id not in self.tasks:
            self.low_id += 1
        return tuple(done)

    def _drop_forgotten_keys(self, before: float) -> int:
        """Let the keys forgotten before `before` go (they were added in log order)."""
        count = 0
        while self.forgotten_times and self.forgotten_times[0][0] < before:
            count += self.forgotten_times.popleft()[1]
        for key in list(islice(self.forgotten_keys, count)):
            del self.forgotten_keys[key]
        return count

    def _rebuild(self) -> None:
        """Copy the dicts retention deletes from: a Python dict keeps the room of its
        largest size, and deleted entries slow the walks from its oldest end."""
        self.tasks = dict(self.tasks)
        self.by_key = dict(self.by_key)
        self.forgotten_keys = dict(self.forgotten_keys)
        self.by_rid, self.rid_times = dict(self.by_rid), dict(self.rid_times)
        self.finished = {queue: dict(ids) for queue, ids in self.finished.items()}
        self.trimmed = {queue: dict(ids) for queue, ids in self.trimmed.items()}
        self._dropped = 0

    def name(self, text: str) -> str:
        """The one copy of a kind or queue name this table holds (every task has one)."""
        return self._names.setdefault(text, text)

    def key_holder(self, key: str) -> int | None:
        """The task a key names: one held, or one forgotten within `keep_keys`."""
        held = self.by_key.get(key)
        if held is not None:
            return held
        return self.forgotten_keys.get(key)

    # ------------------------------------------------------------------ query

    def get(self, task_id: int) -> Task | None:
        return self.tasks.get(task_id)

    def list(
        self,
        state: str | None,
        queue: str | None,
        limit: int,
        after: int,
        kind: str | None = None,
        schedule: str | None = None,
        search: str | None = None,
    ) -> tuple[list[Task], int | None]:
        """Tasks with id > `after` matching the filters, oldest first, and the next cursor.
        `search` matches a task's id exactly or a part of its key."""
        out: list[Task] = []
        wanted = {"state": state, "queue": queue, "kind": kind, "schedule": schedule}
        filters = [(name, value) for name, value in wanted.items() if value is not None]
        for task_id in range(max(after + 1, self.low_id), self.next_id):
            task = self.tasks.get(task_id)
            if task is None:  # forgotten
                continue
            if any(getattr(task, name) != value for name, value in filters):
                continue
            if search and str(task.id) != search and search not in (task.key or ""):
                continue
            out.append(task)
            if len(out) == limit:
                more = task_id + 1 < self.next_id
                return out, task_id if more else None
        return out, None
