"""Execution bookkeeping between the task table and the peers, pure: `Dispatcher`.

On the leader: turns the scheduler's decisions and the workers' results into log
commands (`assign`, `finish`), one of each per round at most, and places the tasks of a
submit that can start at once in the submit itself. On every peer: tells the
driver which attempts to start (an applied `assign` naming this peer and its current
incarnation) and which to stop (an attempt that ended while it ran here), and keeps the
worker's unrecorded results. Time comes in; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from peer.protocol.commands import Assign, Command, Finish, Outcome, Submit
from peer.protocol.execution import WorkerLedger
from peer.protocol.messages import ResultItem
from peer.protocol.records import Applied, Task, TaskState
from peer.protocol.scheduler import Scheduler, Worker
from peer.protocol.tasks import TaskTable


@dataclass(slots=True)
class WorkOrders:
    """What the driver must do on this peer: start these attempts, stop those."""

    starts: list[Task] = field(default_factory=list)
    stops: list[tuple[int, int]] = field(default_factory=list)


class Dispatcher:
    def __init__(self, node_id: int, incarnation: int, scheduler: Scheduler) -> None:
        self.id = node_id
        self.incarnation = incarnation
        self.scheduler = scheduler
        self.ledger = WorkerLedger()
        self._finishes: list[Outcome] = []  # leader: results waiting to be proposed
        self._running_here: set[tuple[int, int]] = set()

    # ----------------------------------------------------------------- leader

    def lead(self, table: TaskTable) -> None:
        """This peer became a serving leader: rebuild the schedule from the table."""
        self.scheduler.reset(table)
        self._finishes = []

    def accept(self, wall: float, table: TaskTable, sender: int, items: list[ResultItem]) -> None:
        """Results from a worker (or this peer): queue a `finish` for each new one."""
        for item in items:
            task = table.tasks.get(item.task)
            if task is None or task.state is not TaskState.RUNNING or task.attempt != item.attempt:
                continue
            if task.worker != sender or not self.scheduler.reported(sender, task.id, task.attempt):
                continue
            value: Any = _parse(item.value) if item.ok else item.value
            retry_at = 0.0 if item.ok else self.scheduler.retry_at(wall, task.attempt)
            self._finishes.append(Outcome(task.id, task.attempt, item.ok, value, retry_at))

    def needs_round(self, wall: float, table: TaskTable, judging: bool) -> tuple[bool, bool]:
        """Whether a round could propose anything, and whether it must judge running
        attempts: results to record, tasks ready at `wall`, or (when `judging`, on a
        timer tick) attempts running somewhere that may be overdue."""
        judge = judging and any(table.running.values())
        ready = self.scheduler.has_ready(wall)
        return bool(self._finishes) or ready or judge, judge

    def round(
        self,
        wall: float,
        table: TaskTable,
        workers: list[Worker],
        live: dict[int, int],
        judge_lost: bool,
        judge: bool = True,
    ) -> list[Command]:
        """The leader's commands for this round: finishes first, then assignments.

        `workers` may take new work (alive); `live` maps every peer not held dead to its
        incarnation (a suspect peer keeps its running attempts). Running attempts are
        judged (timed out, lost) only when `judge`: the driver's ticks, not every cycle.
        """
        for task, reason in self.scheduler.overdue(wall, table, live, judge_lost) if judge else ():
            retry_at = self.scheduler.retry_at(wall, task.attempt)
            self._finishes.append(Outcome(task.id, task.attempt, False, reason, retry_at))
        commands: list[Command] = []
        if self._finishes:
            commands.append(Finish(wall, tuple(self._finishes)))
            self._finishes = []
        assignments = self.scheduler.plan(wall, table, workers)
        if assignments:
            commands.append(Assign(wall, tuple(assignments)))
        return commands

    def may_place(self, command: Command) -> bool:
        """Whether `command` is a submit some of whose specs may start in its entry."""
        return type(command) is Submit and self.scheduler.may_place(command.at, command.tasks)

    def place(self, table: TaskTable, workers: list[Worker], submit: Submit) -> Submit:
        """`submit` with the specs that may start in its own entry placed on workers."""
        placements = self.scheduler.place(table, workers, submit.tasks)
        return replace(submit, place=tuple(placements)) if placements else submit

    def reserve(self, index: int, submit: Submit) -> None:
        """The placed `submit` is the entry at `index`: its slots are held until then."""
        self.scheduler.reserve(index, submit.place)

    # ------------------------------------------------------------ every peer

    def on_applied(self, table: TaskTable, applied: list[Applied], leading: bool) -> WorkOrders:
        """What the applied entries mean here: attempts to start and to stop on this
        peer; on the leader, also what the scheduler must take in or let go."""
        orders = WorkOrders()
        for entry in applied:
            if leading:
                if entry.op == "finish":
                    self.scheduler.finished(table, entry.ended)
                if entry.op in ("assign", "finish", "cancel"):
                    self.scheduler.applied(table, entry.task_ids)
                elif entry.op == "submit":
                    self.scheduler.placed(entry.index)
                self.scheduler.take_ready(table, entry.ready)
            for ended in entry.ended:
                if ended in self._running_here:
                    self._running_here.discard(ended)
                    self._stop(ended, orders)
            if entry.op == "assign":
                self._start_mine(table, entry.task_ids, orders)
            elif entry.started:  # a submit that placed its tasks
                self._start_mine(table, entry.started, orders)
        return orders

    @staticmethod
    def _stop(ended: tuple[int, int], orders: WorkOrders) -> None:
        """Stop an attempt, or never start it if this batch was to start it."""
        for task in orders.starts:
            if (task.id, task.attempt) == ended:
                orders.starts.remove(task)
                return
        orders.stops.append(ended)

    def _start_mine(self, table: TaskTable, task_ids: tuple[int, ...], orders: WorkOrders) -> None:
        # the table is read after the whole batch was applied: an earlier assign of a
        # task may so show its later attempt, which is started (once) by its own entry
        for task_id in task_ids:
            task = table.tasks.get(task_id)
            if task is None:  # a later entry of the batch forgot it (it ended)
                continue
            key = (task.id, task.attempt)
            mine = task.worker == self.id and task.incarnation == self.incarnation
            if mine and task.state is TaskState.RUNNING and key not in self._running_here:
                orders.starts.append(task)
                self._running_here.add(key)

    def installed(self, table: TaskTable) -> WorkOrders:
        """The table was replaced by a snapshot: start the attempts it runs here that
        are not running, stop those running here that it ended."""
        orders = WorkOrders()
        for key in sorted(self._running_here):
            task = table.tasks.get(key[0])
            if task is None or task.state is not TaskState.RUNNING or task.attempt != key[1]:
                self._running_here.discard(key)
                orders.stops.append(key)
        self._start_mine(table, tuple(sorted(table.running.get(self.id, ()))), orders)
        return orders

    def complete(self, item: ResultItem) -> None:
        """This peer finished running an attempt."""
        self.ledger.complete(item)


def _parse(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
