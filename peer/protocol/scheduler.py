"""The leader's scheduling decisions, pure: `Scheduler`.

Which ready task goes to which worker: tasks in policy order (`fifo`: by id; `priority`:
highest first, a waiting task gaining a level every `priority_aging` seconds so none
starves, then by id; `fair`: weighted deficit round robin over queues, FIFO within
each), skipping queues at their `max_running` cap or out of `rate` budget
(`peer.protocol.queues`); workers round-robin over the live peers with a free slot, the
cursor carrying on across rounds.
Dead and suspect peers get nothing. A task is ready when it is `queued`, or `scheduled`
and its `not_before` has passed (dependencies are the task table's business: a blocked
task is never pushed here).

It also decides which running attempts have failed without a report: past their
`timeout`, or on a worker that is dead or came back with a new incarnation. And it
computes retry times: exponential backoff from `retry_base` up to `retry_max`, with
jitter from the `random.Random` passed in.

Assignments and failures it has proposed are held "in flight" until their entry is
applied, so nothing is proposed twice. No I/O, no clock reads.

Prefetch is earned per kind: a worker may hold `slots x prefetch` attempts (the next
ones already committed there when a slot frees) only while every attempt it holds is of
a kind whose recent attempts were short (`prefetch_below` seconds on average, from
assignment to finish, learned from the finishes applied); one of a long or not yet seen
kind drops it to `slots`, so nothing ever waits on a worker behind a long attempt while
another worker idles. Short tasks keep the deep pipeline that makes them fast.

A submit may start its tasks in its own entry (`place`): when a worker has a free slot
and nothing waits to be assigned, a spec that can run at once (no delay, no
dependencies, a queue with no `[queues.X]` policy) is placed on the next worker round-robin,
so the task costs one round fewer. Its slot is held until that entry is applied.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from peer.protocol.commands import Assignment, Placement, TaskSpec
from peer.protocol.queues import QueueChooser
from peer.protocol.records import READY, Attempt, Task, TaskState
from peer.protocol.settings import POLICIES, QueuePolicy
from peer.protocol.tasks import TaskTable

LEARN_RATE = 0.25  # weight of the newest attempt in its kind's moving mean duration
SEED_FROM = 1000  # a new leader learns the durations from this many newest tasks


@dataclass(frozen=True, slots=True)
class Worker:
    id: int
    incarnation: int


class Scheduler:
    def __init__(
        self,
        policy: str,
        slots: int,
        rng: random.Random,
        retry_base: float = 0.5,
        retry_max: float = 30.0,
        prefetch: int = 1,
        queues: Mapping[str, QueuePolicy] | None = None,
        priority_aging: float = 0.0,
        prefetch_below: float = 0.1,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        self.policy = policy
        self.slots = slots
        self.prefetch = prefetch  # a worker holds up to slots x prefetch attempts ...
        self.prefetch_below = prefetch_below  # ... of kinds that took less (seconds)
        self._durations: dict[str, float] = {}  # kind -> its attempts' recent mean
        self._waves: dict[int, int] = {}  # task -> slots' worth held ahead of it when assigned
        self.rng = rng
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.queues = dict(queues or {})
        self.priority_aging = priority_aging
        self._ready: dict[str, list[tuple[tuple[float, int], int, int]]] = {}  # by queue
        self._chooser = QueueChooser(self.queues)  # the fair policy's order of queues
        self._waiting: list[tuple[float, int, int]] = []  # (not_before, id, attempt)
        self._assigning: dict[int, int] = {}  # task -> worker, proposed not yet applied
        self._finishing: set[tuple[int, int]] = set()  # (task, attempt) proposed to end
        self._reported: dict[int, set[int]] = {}  # worker -> tasks it has reported done
        self._placed: dict[int, int] = {}  # worker -> specs placed there, entry not applied
        self._placing: dict[int, tuple[int, ...]] = {}  # entry index -> the workers placed
        self._last_worker = 0  # round-robin cursor, carried across rounds

    # --------------------------------------------------------------- intake

    def reset(self, table: TaskTable) -> None:
        """Start over from the table (a new leader): every ready task, nothing in flight."""
        self._ready, self._waiting = {}, []
        self._chooser.reset()
        self._assigning, self._finishing, self._reported = {}, set(), {}
        self._placed, self._placing = {}, {}
        for task in table.tasks.values():
            if task.state in READY:
                self._push(task)
        self._durations, self._waves = {}, {}
        newest = itertools.islice(reversed(table.tasks.values()), SEED_FROM)
        ended = [a for t in newest if (a := _finished_attempt(t)) is not None]
        ended.sort(key=lambda pair: pair[1].finished_at or 0.0)  # in the order they finished
        for task, attempt in ended:
            self._learn(task.kind, attempt, 0)

    def take_ready(self, table: TaskTable, task_ids: Iterable[int]) -> None:
        """Take in tasks an applied entry made ready."""
        for task_id in task_ids:
            task = table.tasks.get(task_id)  # (gone if the same batch forgot it)
            if task is not None:
                self._push(task)

    def next_release(self) -> float | None:
        """The earliest `not_before` (wall clock) of a task waiting for its time."""
        return self._waiting[0][0] if self._waiting else None

    def has_ready(self, wall: float) -> bool:
        """Tasks ready to assign at `wall`, or due by then (some may have gone stale)."""
        return any(self._ready.values()) or bool(self._waiting and self._waiting[0][0] <= wall)

    def _push(self, task: Task) -> None:
        heapq.heappush(self._waiting, (task.not_before, task.id, task.attempt))

    def _key(self, task: Task) -> tuple[float, int]:
        if self.policy != "priority":
            return (0.0, task.id)
        if self.priority_aging <= 0:
            return (-float(task.priority), task.id)
        # ready since `not_before`, one level up per `priority_aging` seconds of waiting:
        # the order of (level + waited / aging) is that of (ready time - level * aging)
        return (task.not_before - task.priority * self.priority_aging, task.id)

    def _release_due(self, wall: float, table: TaskTable) -> None:
        while self._waiting and self._waiting[0][0] <= wall:
            _, task_id, attempt = heapq.heappop(self._waiting)
            task = table.tasks.get(task_id)
            if task is None:  # cancelled meanwhile, and forgotten by retention
                continue
            if task.queue not in self._ready:
                self._ready[task.queue] = []
                self._chooser.add(task.queue)
            heapq.heappush(self._ready[task.queue], (self._key(task), task_id, attempt))

    # ----------------------------------------------------------- assignment

    def plan(self, wall: float, table: TaskTable, workers: Iterable[Worker]) -> list[Assignment]:
        """This round's assignments."""
        self._release_due(wall, table)
        slots = _Slots(self, table, workers)
        out: list[Assignment] = []
        room = self._room(wall, table)
        while slots.order:
            task = self._next_task(table, room)
            if task is None:
                break
            if task.queue in room:
                room[task.queue] -= 1
            worker = slots.take(task.kind)
            self._waves[task.id] = slots.waves_ahead(worker)
            out.append(Assignment(task.id, task.attempt + 1, worker, slots.incarnations[worker]))
            self._assigning[task.id] = worker
        return out

    def _held(self, worker: int, table: TaskTable) -> tuple[int, bool]:
        """The attempts `worker` holds (running there and not reported, assignments on
        their way, placed specs not yet applied), and whether it may hold more than its
        slots: only while all it holds is of short kinds (a placed spec counts as long
        until its entry is applied: its kind is not kept)."""
        reported = self._reported.get(worker, ())
        held = [t for t in table.running.get(worker, ()) if t not in reported]
        held += [t for t, w in self._assigning.items() if w == worker]
        placed = self._placed.get(worker, 0)
        count = len(held) + placed
        if placed or self.prefetch == 1 or count >= self.slots * self.prefetch:
            return count, False  # (full either way: its kinds need no look)
        tasks = table.tasks
        deep = not any(self._long(task.kind) for t in held if (task := tasks.get(t)) is not None)
        return count, deep

    def _long(self, kind: str) -> bool:
        """Whether attempts of `kind` are not prefetched: long on average lately, or
        none seen finish yet."""
        seconds = self._durations.get(kind)
        return seconds is None or seconds > self.prefetch_below

    def finished(self, table: TaskTable, ended: Iterable[tuple[int, int]]) -> None:
        """A finish entry was applied, ending these (task, attempt) pairs: learn how
        long each took, per kind."""
        for task_id, number in ended:
            waves = self._waves.pop(task_id, 0)
            task = table.tasks.get(task_id)
            if task is None or not task.attempts:
                continue
            attempt: Attempt | None = task.attempts[-1]
            if attempt is not None and attempt.attempt != number:  # (ended again since)
                attempt = next((a for a in task.attempts if a.attempt == number), None)
            if attempt is not None and attempt.finished_at is not None:
                self._learn(task.kind, attempt, waves)

    def _learn(self, kind: str, attempt: Attempt, waves: int) -> None:
        """Fold an ended attempt into its kind's moving mean: its time from assignment
        to finish, less the waves of attempts its worker held ahead of it (each about one
        attempt's time), so a prefetched short kind does not look long for its queue."""
        assert attempt.finished_at is not None
        seconds = max(0.0, attempt.finished_at - attempt.started_at) / (1 + waves)
        before = self._durations.get(kind)
        self._durations[kind] = (
            seconds if before is None else before + LEARN_RATE * (seconds - before)
        )

    # ------------------------------------------------------------ placement

    def place(
        self, table: TaskTable, workers: Iterable[Worker], specs: Iterable[TaskSpec]
    ) -> list[Placement]:
        """Which of a submit's specs start in its own entry (asked only when `may_place`:
        nothing waits to be assigned, those go first). Their slots are held from now
        on; `reserve` ties them to the entry."""
        slots = _Slots(self, table, workers)
        out: list[Placement] = []
        for position, spec in enumerate(specs):
            if not slots.order:
                break
            if not self._startable(spec):
                continue
            worker = slots.take(spec.kind)
            out.append(Placement(position, worker, slots.incarnations[worker]))
            self._placed[worker] = self._placed.get(worker, 0) + 1
        return out

    def may_place(self, wall: float, specs: Iterable[TaskSpec]) -> bool:
        """Whether `place` could place any of `specs` (cheap: no slot is counted)."""
        return not self.has_ready(wall) and any(map(self._startable, specs))

    def _startable(self, spec: TaskSpec) -> bool:
        """A spec whose task can run as soon as it exists: not delayed, not waiting for
        others, in a queue no policy (cap, rate, weight) orders."""
        return not (spec.delay > 0 or spec.depends_on or spec.after or spec.queue in self.queues)

    def reserve(self, index: int, placements: Iterable[Placement]) -> None:
        """The placements `place` made went into the entry at `index`."""
        self._placing[index] = tuple(p.worker for p in placements)

    def placed(self, index: int) -> None:
        """The submit entry at `index` was applied: its placed tasks run (or were not
        made), and the table counts them from now on."""
        for worker in self._placing.pop(index, ()):
            self._placed[worker] -= 1

    def _room(self, wall: float, table: TaskTable) -> dict[str, float]:
        """Starts each capped or rate-limited queue may still take this round: under its
        `max_running` (counting attempts proposed, not yet applied) and its budget."""
        room: dict[str, float] = {}
        pending: dict[str, int] = {}
        for task_id in self._assigning:
            task = table.tasks.get(task_id)
            if task is not None:
                pending[task.queue] = pending.get(task.queue, 0) + 1
        for queue, policy in self.queues.items():
            limit = table.rates.available(queue, wall) - pending.get(queue, 0)
            if policy.max_running is not None:
                running = table.running_in(queue) + pending.get(queue, 0)
                limit = min(limit, policy.max_running - running)
            if limit != float("inf"):
                room[queue] = limit
        return room

    def _next_task(self, table: TaskTable, room: dict[str, float]) -> Task | None:
        def servable(queue: str) -> bool:
            has_room = room.get(queue, 1.0) >= 1.0
            return has_room and self._head(self._ready[queue], table) is not None

        if self.policy == "fair":
            chosen = self._chooser.next(servable, lambda q: not self._ready[q])
        else:  # the best head among the queues that may start one
            heads = [(self._ready[q][0][0], q) for q in self._ready if servable(q)]
            chosen = min(heads)[1] if heads else None
        if chosen is None:
            return None
        _, task_id, _ = heapq.heappop(self._ready[chosen])
        return table.tasks[task_id]

    def _head(
        self, heap: list[tuple[tuple[float, int], int, int]], table: TaskTable
    ) -> Task | None:
        """The first task of `heap` that may start (stale entries dropped), left on it."""
        while heap:
            _, task_id, attempt = heap[0]
            task = table.tasks.get(task_id)  # (None: forgotten by retention)
            fresh = task is not None and task.state in READY and task.attempt == attempt
            if fresh and task_id not in self._assigning:
                return task
            heapq.heappop(heap)
        return None

    def applied(self, table: TaskTable, task_ids: Iterable[int]) -> None:
        """An assign or finish entry was applied: release what it settled."""
        for task_id in task_ids:
            self._assigning.pop(task_id, None)
            task = table.tasks.get(task_id)
            if task is None or task.state is not TaskState.RUNNING:
                self._waves.pop(task_id, None)  # (cancelled, or its assignment did not take)
            if task is not None and task.state in READY:
                self._push(task)  # the assignment did not take: it is ready again
        self._finishing = {(t, a) for t, a in self._finishing if _still_running(table, t, a)}
        for worker, done in self._reported.items():
            done &= table.running.get(worker, set())

    def reported(self, worker: int, task_id: int, attempt: int) -> bool:
        """A worker reported a result: its slot is free even before the finish commits.

        False when a finish of that attempt is already on its way (do not propose again).
        """
        self._reported.setdefault(worker, set()).add(task_id)
        if (task_id, attempt) in self._finishing:
            return False
        self._finishing.add((task_id, attempt))
        return True

    # ------------------------------------------------------------- failures

    def overdue(
        self, wall: float, table: TaskTable, live: dict[int, int], judge_lost: bool
    ) -> list[tuple[Task, str]]:
        """Running attempts to fail: past their timeout, or on a lost worker.

        `live` maps each live worker to its incarnation; `judge_lost` is False until
        the leader has watched membership long enough to call a worker lost.
        """
        out = []
        for task_ids in table.running.values():
            for task_id in task_ids:
                task = table.tasks[task_id]
                if (task_id, task.attempt) in self._finishing:
                    continue
                reason = self._failure(wall, task, live, judge_lost)
                if reason is not None:
                    self._finishing.add((task_id, task.attempt))
                    out.append((task, reason))
        return out

    def _failure(
        self, wall: float, task: Task, live: dict[int, int], judge_lost: bool
    ) -> str | None:
        started = wall if task.started_at is None else task.started_at
        # the worker enforces the timeout itself; this is the backstop for a worker that
        # went quiet, allowing for the attempts queued ahead of it on that worker
        if task.timeout is not None and wall - started > task.timeout * self.prefetch:
            return f"timeout after {task.timeout:g}s"
        if not judge_lost or task.worker is None:
            return None
        incarnation = live.get(task.worker)
        if incarnation is None:
            return f"worker {task.worker} lost"
        if incarnation > task.incarnation:
            return f"worker {task.worker} restarted"
        return None

    def retry_at(self, wall: float, attempt: int) -> float:
        """When a task whose attempt `attempt` failed may run again."""
        backoff = min(self.retry_max, self.retry_base * 2.0 ** max(0, attempt - 1))
        return wall + backoff * (0.5 + 0.5 * self.rng.random())


class _Slots:
    """One round's free slots per worker, handed out round-robin from the scheduler's
    cursor (which carries on across rounds): `slots x prefetch` per worker that holds
    only short attempts, `slots` per one that holds a long one."""

    def __init__(self, scheduler: Scheduler, table: TaskTable, workers: Iterable[Worker]):
        self.scheduler = scheduler
        self.held: dict[int, int] = {}
        self.deep: dict[int, bool] = {}  # worker -> it may hold slots x prefetch
        for w in workers:
            self.held[w.id], self.deep[w.id] = scheduler._held(w.id, table)
        self.incarnations = {w.id: w.incarnation for w in workers}
        self.order = sorted(w for w in self.held if self._room(w) > 0)  # with a free slot

    def waves_ahead(self, worker: int) -> int:
        """How many slots' worth of attempts `worker` held before its latest one."""
        return (self.held[worker] - 1) // self.scheduler.slots

    def _room(self, worker: int) -> int:
        depth = self.scheduler.prefetch if self.deep[worker] else 1
        return self.scheduler.slots * depth - self.held[worker]

    def take(self, kind: str) -> int:
        """The next worker after the cursor with a free slot; that slot is taken by an
        attempt of `kind`. One of a long kind goes, if it can, to a worker with a slot
        free to start it, and leaves the worker only its slots."""
        order, cursor = self.order, self.scheduler._last_worker
        if self.scheduler._long(kind):
            idle = [w for w in order if self.held[w] < self.scheduler.slots]
            order = idle or order
        worker = next((w for w in order if w > cursor), order[0])
        self.scheduler._last_worker = worker
        self.held[worker] += 1
        if self.deep[worker] and self.scheduler._long(kind):
            self.deep[worker] = False
        if self._room(worker) <= 0:
            self.order.remove(worker)
        return worker


def _finished_attempt(task: Task) -> tuple[Task, Attempt] | None:
    """`task` and its last attempt, if that ran to a finish (not cancelled)."""
    if not task.attempts:
        return None
    attempt = task.attempts[-1]
    if attempt.finished_at is None or attempt.outcome not in ("succeeded", "failed"):
        return None
    return task, attempt


def _still_running(table: TaskTable, task_id: int, attempt: int) -> bool:
    task = table.tasks.get(task_id)
    return task is not None and task.state is TaskState.RUNNING and task.attempt == attempt
