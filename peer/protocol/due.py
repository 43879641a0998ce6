"""When a schedule's ticks fall due: pure arithmetic on times passed in.

An `every` schedule ticks at `origin + k * every` (k = 1, 2, ...), `origin` being the
time its entry was written (or it was resumed); a `cron` schedule ticks where its
expression matches, in its timezone (DST included: croniter walks local time), with 5
fields, or 6 with seconds first. Nothing here reads a clock: `origin`, the last tick and
`now` come from the log and the caller, so every leader computes the same ticks.
Timezone rules are read from the system's tz database (static data, like the code).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from peer.protocol.commands import ScheduleSpec

MAX_SCAN = 10_000  # cron ticks walked at most per round (a long outage counts in rounds)
EPSILON = 1e-6  # seconds: a tick this close to `now` counts as due


def cron_iter(spec: ScheduleSpec, after: float) -> Iterator[float]:
    """The cron ticks strictly after `after`, in order."""
    assert spec.cron is not None
    zone = ZoneInfo(spec.timezone)
    start = datetime.fromtimestamp(after, zone)
    seconds_first = len(spec.cron.split()) == 6
    walker = croniter(spec.cron, start, second_at_beginning=seconds_first)
    while True:
        yield float(walker.get_next(float))


def is_valid_cron(expression: str) -> bool:
    fields = len(expression.split())
    if fields not in (5, 6):
        return False
    return bool(croniter.is_valid(expression, second_at_beginning=fields == 6))


def next_due(spec: ScheduleSpec, origin: float, after: float) -> float:
    """The first tick strictly after `after` (and after `origin`)."""
    after = max(after, origin)
    if spec.every is not None:
        k = math.floor((after - origin) / spec.every + EPSILON) + 1
        return origin + k * spec.every
    return next(cron_iter(spec, after))


def due_ticks(
    spec: ScheduleSpec, origin: float, after: float, now: float, keep: int
) -> tuple[list[float], int]:
    """The ticks in (`after`, `now`]: the last `keep` of them, and how many there are."""
    after = max(after, origin)
    if spec.every is not None:
        first = math.floor((after - origin) / spec.every + EPSILON) + 1
        last = math.floor((now - origin) / spec.every + EPSILON)
        total = max(0, last - first + 1)
        start = max(first, last - keep + 1)
        return [origin + k * spec.every for k in range(start, last + 1)], total
    ticks: list[float] = []
    total = 0
    for due in cron_iter(spec, after):
        if due > now + EPSILON or total >= MAX_SCAN:
            break
        total += 1
        ticks.append(due)
        if len(ticks) > keep:
            del ticks[0]
    return ticks, total


def instant(due: float) -> str:
    """A due time as an ISO-8601 UTC instant with milliseconds, as keys spell it."""
    text = datetime.fromtimestamp(due, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")
