"""The leader's scheduling decisions, pure: `Scheduler`.

Which ready task goes to which worker: tasks in policy order (`fifo`: by id; `priority`:
highest first, then by id; `fair`: round-robin over queues, FIFO within each), workers
round-robin over the live peers with a free slot, the cursor carrying on across rounds.
Dead and suspect peers get nothing. A task is ready when it is `queued`, or `scheduled`
and its `not_before` has passed (dependencies are the task table's business: a blocked
task is never pushed here).

It also decides which running attempts have failed without a report: past their
`timeout`, or on a worker that is dead or came back with a new incarnation. And it
computes retry times: exponential backoff from `retry_base` up to `retry_max`, with
jitter from the `random.Random` passed in.

Assignments and failures it has proposed are held "in flight" until their entry is
applied, so nothing is proposed twice. No I/O, no clock reads.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from peer.protocol.commands import Assignment
from peer.protocol.settings import POLICIES
from peer.protocol.tasks import READY, Task, TaskState, TaskTable


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
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}")
        self.policy = policy
        self.slots = slots
        self.prefetch = prefetch  # a worker holds up to slots x prefetch attempts
        self.rng = rng
        self.retry_base = retry_base
        self.retry_max = retry_max
        self._ready: dict[str, list[tuple[tuple[int, int], int, int]]] = {}
        self._queues: deque[str] = deque()  # fair: queue names, round-robin
        self._waiting: list[tuple[float, int, int]] = []  # (not_before, id, attempt)
        self._assigning: dict[int, int] = {}  # task -> worker, proposed not yet applied
        self._finishing: set[tuple[int, int]] = set()  # (task, attempt) proposed to end
        self._reported: dict[int, set[int]] = {}  # worker -> tasks it has reported done
        self._last_worker = 0  # round-robin cursor, carried across rounds

    # --------------------------------------------------------------- intake

    def reset(self, table: TaskTable) -> None:
        """Start over from the table (a new leader): every ready task, nothing in flight."""
        self._ready, self._queues, self._waiting = {}, deque(), []
        self._assigning, self._finishing, self._reported = {}, set(), {}
        for task in table.tasks.values():
            if task.state in READY:
                self._push(task)

    def take_ready(self, table: TaskTable, task_ids: Iterable[int]) -> None:
        """Take in tasks an applied entry made ready."""
        for task_id in task_ids:
            self._push(table.tasks[task_id])

    def next_release(self) -> float | None:
        """The earliest `not_before` (wall clock) of a task waiting for its time."""
        return self._waiting[0][0] if self._waiting else None

    def has_pending(self) -> bool:
        """Tasks waiting for their time or ready to assign (some may have gone stale)."""
        return bool(self._waiting) or any(self._ready.values())

    def _push(self, task: Task) -> None:
        heapq.heappush(self._waiting, (task.not_before, task.id, task.attempt))

    def _key(self, task: Task) -> tuple[int, int]:
        return (-task.priority, task.id) if self.policy == "priority" else (0, task.id)

    def _release_due(self, wall: float, table: TaskTable) -> None:
        while self._waiting and self._waiting[0][0] <= wall:
            _, task_id, attempt = heapq.heappop(self._waiting)
            task = table.tasks[task_id]
            queue = task.queue if self.policy == "fair" else ""
            if queue not in self._ready:
                self._ready[queue] = []
                self._queues.append(queue)
            heapq.heappush(self._ready[queue], (self._key(task), task_id, attempt))

    # ----------------------------------------------------------- assignment

    def plan(self, wall: float, table: TaskTable, workers: Iterable[Worker]) -> list[Assignment]:
        """This round's assignments."""
        self._release_due(wall, table)
        free = {w.id: self._free_slots(w.id, table) for w in workers}
        incarnations = {w.id: w.incarnation for w in workers}
        order = sorted(w for w, n in free.items() if n > 0)
        out: list[Assignment] = []
        while order:
            task = self._next_task(table)
            if task is None:
                break
            worker = next((w for w in order if w > self._last_worker), order[0])
            self._last_worker = worker
            out.append(Assignment(task.id, task.attempt + 1, worker, incarnations[worker]))
            self._assigning[task.id] = worker
            free[worker] -= 1
            if free[worker] == 0:
                order.remove(worker)
        return out

    def _free_slots(self, worker: int, table: TaskTable) -> int:
        running = table.running.get(worker, set())
        busy = len(running - self._reported.get(worker, set()))
        busy += sum(1 for w in self._assigning.values() if w == worker)
        return max(0, self.slots * self.prefetch - busy)

    def _next_task(self, table: TaskTable) -> Task | None:
        for _ in range(len(self._queues)):
            queue = self._queues[0]
            self._queues.rotate(-1)
            task = self._pop_valid(self._ready[queue], table)
            if task is not None:
                return task
        return None

    def _pop_valid(
        self, heap: list[tuple[tuple[int, int], int, int]], table: TaskTable
    ) -> Task | None:
        while heap:
            _, task_id, attempt = heapq.heappop(heap)
            task = table.tasks[task_id]
            if task.state in READY and task.attempt == attempt and task_id not in self._assigning:
                return task
        return None

    def applied(self, table: TaskTable, task_ids: Iterable[int]) -> None:
        """An assign or finish entry was applied: release what it settled."""
        for task_id in task_ids:
            self._assigning.pop(task_id, None)
            task = table.tasks.get(task_id)
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


def _still_running(table: TaskTable, task_id: int, attempt: int) -> bool:
    task = table.tasks.get(task_id)
    return task is not None and task.state is TaskState.RUNNING and task.attempt == attempt
