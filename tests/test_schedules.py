"""Ring 1 for periodic tasks: due times (`peer.protocol.due`) as tables, the schedule
book's rules, and the leader's tick planner (`TickPlanner`), each test named after the
rule it checks. Times are plain numbers passed in; no clock is read."""

from __future__ import annotations

import tomllib
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from peer.config import ConfigError, dump_config, parse_config
from peer.protocol.commands import (
    SchedulePause,
    SchedulePut,
    ScheduleSkip,
    ScheduleSpec,
    Submit,
    TaskSpec,
    decode_command,
    encode_command,
)
from peer.protocol.due import due_ticks, instant, is_valid_cron, next_due
from peer.protocol.schedules import ScheduleBook, TickPlanner, tick_key
from peer.protocol.tasks import TaskTable
from peer.registry import Registry
from peer.runtime.validation import declared_schedules

ECHO = TaskSpec("echo", {"hello": "world"})
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def every(seconds: float, **kw: Any) -> ScheduleSpec:
    return ScheduleSpec("s", ECHO, every=seconds, **kw)


def cron(expression: str, zone: str = "UTC", **kw: Any) -> ScheduleSpec:
    return ScheduleSpec("c", ECHO, cron=expression, timezone=zone, **kw)


def at(zone: str, *parts: int) -> float:
    return datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp()  # type: ignore[misc]


# ------------------------------------------------------------------- due times


@pytest.mark.parametrize(
    ("seconds", "after", "expected"),
    [
        (5.0, T0, T0 + 5),  # the first tick comes one period after the origin
        (5.0, T0 + 4.9, T0 + 5),
        (5.0, T0 + 5, T0 + 10),  # strictly after the last tick
        (0.5, T0 + 1.0, T0 + 1.5),
        (5.0, T0 - 100, T0 + 5),  # never before the origin
    ],
)
def test_an_every_schedule_ticks_at_origin_plus_whole_periods(
    seconds: float, after: float, expected: float
) -> None:
    assert next_due(every(seconds), T0, after) == expected


PARIS = "Europe/Paris"


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        ("*/15 * * * *", "UTC", (2026, 1, 1, 0, 0), "2026-01-01T00:15:00+00:00"),
        ("*/10 * * * * *", "UTC", (2026, 1, 1, 0, 0), "2026-01-01T00:00:10+00:00"),  # s first
        ("0 9 * * *", PARIS, (2026, 1, 1, 0, 0), "2026-01-01T09:00:00+01:00"),
        ("0 9 * * 1-5", PARIS, (2026, 1, 2, 10, 0), "2026-01-05T09:00:00+01:00"),  # Fri->Mon
        # 29 March 2026 the clocks go 02:00 -> 03:00: a 02:30 tick fires at 03:00
        ("30 2 * * *", PARIS, (2026, 3, 28, 12, 0), "2026-03-29T03:00:00+02:00"),
        ("0 9 * * *", PARIS, (2026, 3, 28, 12, 0), "2026-03-29T09:00:00+02:00"),
        # 25 October 2026 02:00-03:00 happens twice: a 02:30 tick fires at the first
        ("30 2 * * *", PARIS, (2026, 10, 24, 12, 0), "2026-10-25T02:30:00+02:00"),
        ("0 9 * * *", PARIS, (2026, 10, 24, 12, 0), "2026-10-25T09:00:00+01:00"),
    ],
)
def test_a_cron_schedule_ticks_where_its_expression_matches_in_its_timezone(
    expression: str, zone: str, after: tuple[int, ...], expected: str
) -> None:
    start = at(zone, *after)
    due = next_due(cron(expression, zone), start, start)
    assert datetime.fromtimestamp(due, ZoneInfo(zone)).isoformat() == expected


@pytest.mark.parametrize(
    ("after", "now", "keep", "ticks", "total"),
    [
        (T0, T0 + 4.99, 100, [], 0),
        (T0, T0 + 5, 100, [T0 + 5], 1),
        (T0, T0 + 23, 100, [T0 + 5, T0 + 10, T0 + 15, T0 + 20], 4),
        (T0, T0 + 23, 2, [T0 + 15, T0 + 20], 4),  # only the most recent `keep`
        (T0 + 10, T0 + 23, 100, [T0 + 15, T0 + 20], 2),
        (T0, T0 + 5_000_000, 1, [T0 + 5_000_000], 1_000_000),  # counted, not walked
    ],
)
def test_due_ticks_are_those_after_the_last_and_up_to_now(
    after: float, now: float, keep: int, ticks: list[float], total: int
) -> None:
    assert due_ticks(every(5.0), T0, after, now, keep) == (ticks, total)


def test_a_cron_outage_is_walked_and_counted() -> None:
    ticks, total = due_ticks(cron("* * * * *"), T0 - 1, T0 - 1, T0 + 3600 - 1, 3)
    assert total == 60 and ticks == [T0 + 57 * 60, T0 + 58 * 60, T0 + 59 * 60]


@pytest.mark.parametrize(
    ("expression", "valid"),
    [("*/5 * * * *", True), ("0 0 * * * *", True), ("61 * * * *", False), ("* * *", False)],
)
def test_cron_expressions_have_five_fields_or_six_with_seconds(
    expression: str, valid: bool
) -> None:
    assert is_valid_cron(expression) is valid


def test_a_tick_key_names_the_schedule_and_its_due_instant_in_utc() -> None:
    assert instant(T0 + 5.5) == "2026-01-01T00:00:05.500Z"
    assert tick_key("hello", T0 + 5) == "schedule:hello:2026-01-01T00:00:05.000Z"


def test_schedule_commands_round_trip_through_the_codec() -> None:
    spec = cron("0 9 * * 1-5", "Europe/Paris", catch_up="all", overlap=False)
    for command in (SchedulePut(T0, spec, True), ScheduleSkip(T0, "c", T0 + 5, 3, "missed")):
        assert decode_command(encode_command(command)) == command


# --------------------------------------------------------------------- the book


def test_an_identical_put_changes_nothing_and_a_different_one_needs_replace() -> None:
    book = ScheduleBook()
    assert book.put(SchedulePut(T0, every(5.0))) == "created"
    assert book.put(SchedulePut(T0 + 1, every(5.0))) == "unchanged"
    assert book.put(SchedulePut(T0 + 2, every(7.0))) == "conflict"
    assert book.schedules["s"].spec.every == 5.0
    assert book.put(SchedulePut(T0 + 3, every(7.0), replace=True)) == "replaced"
    assert book.schedules["s"].spec.every == 7.0


def test_the_last_tick_comes_from_the_log_and_never_moves_back() -> None:
    table = TaskTable()
    table.apply_command(1, SchedulePut(T0, every(5.0)))
    planner = TickPlanner()
    submit = planner.plan(T0 + 10, table.schedules, lambda task: False)[0]
    assert isinstance(submit, Submit) and [s.due for s in submit.tasks] == [T0 + 10]
    table.apply_command(2, submit)
    schedule = table.schedules.schedules["s"]
    assert (schedule.last_due, schedule.fired, schedule.next_due()) == (T0 + 10, 1, T0 + 15)
    late = Submit(T0 + 11, (TaskSpec("echo", key="old", schedule="s", due=T0 + 5),))
    table.apply_command(3, late)  # an older tick submitted late
    assert schedule.last_due == T0 + 10


def test_a_resumed_schedule_fires_no_tick_from_its_pause() -> None:
    book = ScheduleBook()
    book.put(SchedulePut(T0, every(5.0)))
    book.pause(SchedulePause(T0 + 1, "s", True))
    assert TickPlanner().plan(T0 + 60, book, lambda task: False) == []
    book.pause(SchedulePause(T0 + 60, "s", False))
    assert book.schedules["s"].next_due() == T0 + 65


# ------------------------------------------------------------------ the planner


def _fired(commands: list[Any]) -> list[float]:
    return [spec.due for c in commands if isinstance(c, Submit) for spec in c.tasks]


def _skipped(commands: list[Any]) -> list[tuple[int, str]]:
    return [(c.count, c.reason) for c in commands if isinstance(c, ScheduleSkip)]


@pytest.mark.parametrize(
    ("catch_up", "now", "fired", "skipped"),
    [
        ("all", T0 + 21, [T0 + 5, T0 + 10, T0 + 15, T0 + 20], []),
        ("latest", T0 + 21, [T0 + 20], [(3, "missed")]),
        ("none", T0 + 20.5, [T0 + 20], [(3, "missed")]),  # the latest is on time
        ("none", T0 + 23, [], [(4, "missed")]),  # even the latest is late
        ("latest", T0 + 5, [T0 + 5], []),
    ],
)
def test_catch_up_decides_which_missed_ticks_fire(
    catch_up: str, now: float, fired: list[float], skipped: list[tuple[int, str]]
) -> None:
    book = ScheduleBook()
    book.put(SchedulePut(T0, every(5.0, catch_up=catch_up)))
    commands = TickPlanner().plan(now, book, lambda task: False)
    assert (_fired(commands), _skipped(commands)) == (fired, skipped)


def test_catch_up_all_fires_at_most_max_catch_up_ticks() -> None:
    book = ScheduleBook()
    book.put(SchedulePut(T0, every(1.0, catch_up="all")))
    commands = TickPlanner(max_catch_up=100).plan(T0 + 250, book, lambda task: False)
    assert _fired(commands) == [T0 + k for k in range(151, 251)]
    assert _skipped(commands) == [(150, "missed")]


def test_a_tick_is_proposed_once_per_leader_until_the_log_shows_it() -> None:
    book = ScheduleBook()
    book.put(SchedulePut(T0, every(5.0)))
    planner = TickPlanner()
    assert _fired(planner.plan(T0 + 5, book, lambda task: False)) == [T0 + 5]
    assert planner.plan(T0 + 6, book, lambda task: False) == []  # in flight
    assert planner.next_release(book) == T0 + 10
    planner.reset()  # a new leader knows only the log: it proposes again, the key dedupes
    commands = planner.plan(T0 + 6, book, lambda task: False)
    assert [s.key for c in commands if isinstance(c, Submit) for s in c.tasks] == [
        tick_key("s", T0 + 5)
    ]


def test_without_overlap_a_tick_is_skipped_while_the_previous_run_runs() -> None:
    table = TaskTable()
    table.apply_command(1, SchedulePut(T0, every(5.0, overlap=False)))
    planner = TickPlanner()
    table.apply_command(2, planner.plan(T0 + 5, table.schedules, lambda task: False)[0])
    still_running = planner.plan(T0 + 10, table.schedules, lambda task: task == 1)
    assert (_fired(still_running), _skipped(still_running)) == ([], [(1, "overlap")])
    table.apply_command(3, still_running[0])
    assert table.schedules.schedules["s"].skipped == {"overlap": 1}
    done = planner.plan(T0 + 15, table.schedules, lambda task: False)
    assert _fired(done) == [T0 + 15]


def test_a_ticks_task_carries_the_schedule_its_due_time_and_its_lateness() -> None:
    table = TaskTable()
    table.apply_command(1, SchedulePut(T0, every(5.0)))
    [submit] = TickPlanner().plan(T0 + 5.02, table.schedules, lambda task: False)
    table.apply_command(2, submit)
    task = table.tasks[1].to_json()
    assert (task["schedule"], task["due"], task["key"]) == ("s", T0 + 5, tick_key("s", T0 + 5))
    assert task["lateness"] == pytest.approx(0.02)
    assert task["args"] == {"hello": "world"}


# ------------------------------------------------------------------ cluster.toml

TOML = """
[cluster]
data_dir = "d"

[[node]]
id = 1
port = 7001

[[schedule]]
name = "hello"
every = 5.0
task = { kind = "echo", args = { hello = "world", n = [1, 2] } }
catch_up = "all"
"""


def test_schedule_tables_are_read_written_back_and_checked_like_request_bodies() -> None:
    config = parse_config(tomllib.loads(TOML))
    assert parse_config(tomllib.loads(dump_config(config))) == config
    [spec] = declared_schedules(config, Registry())
    assert spec == ScheduleSpec(
        "hello", TaskSpec("echo", {"hello": "world", "n": [1, 2]}), every=5.0, catch_up="all"
    )
    bad = parse_config(tomllib.loads(TOML.replace("every = 5.0", 'cron = "* *"')))
    with pytest.raises(ConfigError, match=r"schedule\[0\]\.cron: must be a cron"):
        declared_schedules(bad, Registry())
