"""Periodic tasks, pure: the schedules the log holds (`ScheduleBook`) and the leader's
decision of which ticks to fire now (`TickPlanner`).

Exactly once per tick: a due tick is submitted as a task keyed
`schedule:<name>:<due instant>`, so a tick proposed twice (a retry, a new leader) makes
one task. Due times follow from the schedule's origin (when its entry was written or it
was resumed) and the last tick the log shows fired or skipped, never from whoever leads
now, so a new leader continues exactly where the old one stopped.

Catch-up, for ticks that fell due while nobody could fire them: `all` fires every one
(up to `max_catch_up`, the most recent), `latest` only the most recent, `none` only a
tick less than `ON_TIME` late. `overlap = False` skips a tick while the schedule's
previous run has not ended. Passed-over ticks are written as `ScheduleSkip` entries
and counted. No I/O; the wall clock comes in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from peer.protocol.commands import (
    Command,
    SchedulePause,
    SchedulePut,
    ScheduleSkip,
    ScheduleSpec,
    Submit,
    TaskSpec,
)
from peer.protocol.due import EPSILON, due_ticks, instant, next_due

ON_TIME = 1.0  # seconds: a tick later than this is "missed" for catch_up = "none"
RUN_STATES = ("succeeded", "failed", "cancelled")


@dataclass(slots=True)
class Schedule:
    """One schedule and what the log says of it."""

    spec: ScheduleSpec
    origin: float  # ticks come after this: when it was put, or last resumed
    created_at: float
    paused: bool = False
    last_due: float | None = None  # the last tick fired or skipped
    last_task: int | None = None  # the task of the last tick fired
    fired: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> ticks
    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_STATES, 0))

    @property
    def after(self) -> float:
        return self.origin if self.last_due is None else max(self.origin, self.last_due)

    def next_due(self) -> float:
        return next_due(self.spec, self.origin, self.after)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.spec.to_json(),
            "paused": self.paused,
            "created_at": self.created_at,
            "next_due": None if self.paused else self.next_due(),
            "last_due": self.last_due,
            "last_task": self.last_task,
            "fired": self.fired,
            "skipped": dict(self.skipped),
            "runs": dict(self.runs),
        }


@dataclass(slots=True)
class ScheduleBook:
    """Every schedule by name, changed only by applied entries (deterministic)."""

    schedules: dict[str, Schedule] = field(default_factory=dict)

    def get(self, name: str) -> Schedule | None:
        return self.schedules.get(name)

    def put(self, command: SchedulePut) -> str:
        """ "created", "replaced", "unchanged" or "conflict" (a different one exists)."""
        spec, existing = command.schedule, self.schedules.get(command.schedule.name)
        if existing is not None and existing.spec == spec:
            return "unchanged"
        if existing is not None and not command.replace:
            return "conflict"
        if existing is None:
            self.schedules[spec.name] = Schedule(spec, command.at, command.at)
            return "created"
        existing.spec, existing.origin = spec, command.at
        existing.last_due = None  # a new rhythm starts now; keys still dedupe old ticks
        return "replaced"

    def delete(self, name: str) -> bool:
        return self.schedules.pop(name, None) is not None

    def pause(self, command: SchedulePause) -> bool:
        schedule = self.schedules.get(command.name)
        if schedule is None:
            return False
        if schedule.paused and not command.paused:  # resumed: no ticks from the pause
            schedule.origin, schedule.last_due = command.at, None
        schedule.paused = command.paused
        return True

    def skip(self, command: ScheduleSkip) -> bool:
        schedule = self.schedules.get(command.name)
        if schedule is None:
            return False
        schedule.last_due = max(schedule.last_due or command.due, command.due)
        schedule.skipped[command.reason] = schedule.skipped.get(command.reason, 0) + command.count
        return True

    def fired(self, name: str, due: float, task_id: int) -> None:
        schedule = self.schedules.get(name)
        if schedule is None or (schedule.last_due is not None and due <= schedule.last_due):
            return  # a deleted schedule, or an older tick submitted late
        schedule.last_due, schedule.last_task = due, task_id
        schedule.fired += 1

    def ended(self, name: str, state: str) -> None:
        schedule = self.schedules.get(name)
        if schedule is not None and state in schedule.runs:
            schedule.runs[state] += 1


class TickPlanner:
    """The leader's side: which ticks to submit or skip this round. Remembers what it
    proposed and the log has not shown yet, so a tick is proposed once per leader."""

    def __init__(self, max_catch_up: int = 100) -> None:
        self.max_catch_up = max_catch_up
        self._proposed: dict[str, float] = {}  # schedule -> latest due proposed
        # schedule -> (what its next due follows from, that due): a cron walk per change,
        # not per round (the leader plans every cycle)
        self._next_due: dict[str, tuple[tuple[ScheduleSpec, float, float], float]] = {}

    def reset(self) -> None:
        """A new leader: what the old one proposed is known from the log alone."""
        self._proposed = {}

    def next_release(self, book: ScheduleBook) -> float | None:
        """The earliest due tick not yet proposed (wall clock), to wake on time."""
        dues = [self._next(name, s) for name, s in book.schedules.items() if not s.paused]
        return min(dues, default=None)

    def plan(
        self, wall: float, book: ScheduleBook, running: Callable[[int], bool]
    ) -> list[Command]:
        """Commands for every schedule with ticks due at `wall`: one `Submit` of every
        tick fired, then a `ScheduleSkip` per schedule that passed ticks over. `running`
        tells whether a task has not ended yet (for `overlap = False`)."""
        specs: list[TaskSpec] = []
        skips: list[Command] = []
        for name, schedule in sorted(book.schedules.items()):
            if schedule.paused:
                continue
            after = self._after(name, schedule)
            if self._next(name, schedule) > wall + EPSILON:
                continue  # nothing due yet (the common case)
            keep = self.max_catch_up if schedule.spec.catch_up == "all" else 1
            ticks, total = due_ticks(schedule.spec, schedule.origin, after, wall, keep)
            if not ticks:
                continue
            self._proposed[name] = ticks[-1]
            last = schedule.last_task
            blocked = not schedule.spec.overlap and last is not None and running(last)
            fire = [] if blocked else _choose(schedule.spec.catch_up, ticks, wall)
            specs += [_tick_spec(schedule.spec, due) for due in fire]
            if total > len(fire):
                reason = "overlap" if blocked else "missed"
                skips.append(ScheduleSkip(wall, name, ticks[-1], total - len(fire), reason))
        return ([Submit(wall, tuple(specs))] if specs else []) + skips

    def _after(self, name: str, schedule: Schedule) -> float:
        """Ticks due after this one: the last the log shows, or this leader proposed."""
        return max(schedule.after, self._proposed.get(name, schedule.after))

    def _next(self, name: str, schedule: Schedule) -> float:
        basis = (schedule.spec, schedule.origin, self._after(name, schedule))
        cached = self._next_due.get(name)
        if cached is None or cached[0] != basis:
            cached = self._next_due[name] = (basis, next_due(*basis))
        return cached[1]


def _choose(catch_up: str, ticks: list[float], wall: float) -> list[float]:
    """Which of the due ticks to fire (the others are skipped as missed)."""
    if catch_up == "all":
        return ticks
    if catch_up == "latest" or wall - ticks[-1] <= ON_TIME:
        return ticks[-1:]
    return []


def tick_key(name: str, due: float) -> str:
    return f"schedule:{name}:{instant(due)}"


def _tick_spec(spec: ScheduleSpec, due: float) -> TaskSpec:
    return replace(spec.task, key=tick_key(spec.name, due), schedule=spec.name, due=due)
