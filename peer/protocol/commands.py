"""The task log's commands as typed values, and their one codec (JSON text in entries).

Owns: `Submit`, `Assign`, `Finish`, `Cancel`, `Noop` (frozen, slotted) and what they
carry (`TaskSpec`, `Assignment`, `Outcome`); `encode_command` and `decode_command`.
An entry's text is what is persisted and replicated; the core proposes typed commands
and the task table applies typed commands, so no dict crosses the core.

The JSON shapes (kept stable, as they are on disk):
  {"op": "noop"}
  {"op": "submit", "at": T, "rid": R, "tasks": [spec, ...], "place": [[pos, worker, inc], ...]}
  {"op": "assign", "at": T, "items": [[id, attempt, worker, incarnation], ...]}
  {"op": "finish", "at": T, "items": [[id, attempt, ok, value, retry_at], ...]}
  {"op": "cancel", "at": T, "id": N}
  {"op": "trim", "at": T, "ids": [id, ...]}
  {"op": "forget", "at": T, "ids": [id, ...], "keys_before": T}
  {"op": "members", "at": T, "base": I, "voters": [[id, url], ...], "learners": [...]}

Decoding checks every field's type (the checks are in `peer.protocol.fields`) and raises
`CommandError` on anything else, so a malformed entry is refused whole (the table skips
it the same way on every peer) and never half-applied. Pure: orjson only, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from peer.protocol.configuration import Configuration
from peer.protocol.fields import SPEC_CHECKS as _SPEC_CHECKS
from peer.protocol.fields import CommandError as CommandError  # (re-exported)
from peer.protocol.fields import as_is as _as_is
from peer.protocol.fields import at as _at
from peer.protocol.fields import integer as _integer
from peer.protocol.fields import list_field as _list
from peer.protocol.fields import number as _number
from peer.protocol.fields import optional_text as _optional_text
from peer.protocol.fields import row as _row
from peer.protocol.fields import typed as _typed


@dataclass(slots=True)
class TaskSpec:
    """One task as submitted (already checked by the API); `ref`/`after` name other
    specs of the same submit. Never changed once made (not frozen only because a frozen
    dataclass costs about three times as much to make: 1.8 against 0.6 µs, and a batch
    submit makes thousands)."""

    kind: str
    args: Any = None
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 3
    timeout: float | None = None
    delay: float = 0.0
    depends_on: tuple[int, ...] = ()
    key: str | None = None
    ref: str | None = None
    after: tuple[str, ...] = ()
    schedule: str | None = None  # the schedule whose tick this is
    due: float | None = None  # ... and the tick's due time

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON, defaults left out (as a client would send it)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.args is not None:
            out["args"] = self.args
        if self.queue != "default":
            out["queue"] = self.queue
        for name, default in _SPEC_RARE_DEFAULTS:
            value = getattr(self, name)
            if value != default:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, data: Any) -> TaskSpec:
        """The spec a JSON object holds, every field checked; only the fields present
        are looked at (most specs carry two or three), unknown ones are ignored."""
        if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
            raise CommandError("tasks: a spec needs a kind")
        if len(data) == 2 and "args" in data:  # the most common spec: nothing to check
            return cls(data["kind"], data["args"])
        fields: dict[str, Any] = {}
        for name, value in data.items():
            check = _SPEC_FIELDS.get(name)
            if check is not None:
                fields[name] = value if check is _as_is else check(value, name)
        return cls(**fields)


# how `from_json` takes each field: the kind it has checked already
_SPEC_FIELDS = {**_SPEC_CHECKS, "kind": _as_is}

_SPEC_DEFAULTS: dict[str, Any] = {
    "args": None,
    "queue": "default",
    "priority": 0,
    "max_attempts": 3,
    "timeout": None,
    "delay": 0.0,
    "depends_on": (),
    "key": None,
    "ref": None,
    "after": (),
    "schedule": None,
    "due": None,
}
# the fields `to_json` compares one by one (args and queue, in most specs, it tests first)
_SPEC_RARE_DEFAULTS = tuple((n, d) for n, d in _SPEC_DEFAULTS.items() if n not in ("args", "queue"))


CATCH_UP = ("all", "latest", "none")


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A periodic task: every `every` seconds or on a `cron` expression (5 fields, or 6
    with seconds first) in `timezone`, submitting `task` at each tick. `catch_up` says
    which ticks missed while nobody could fire are fired late; `overlap = False` skips a
    tick while the previous run is still running."""

    name: str
    task: TaskSpec
    every: float | None = None
    cron: str | None = None
    catch_up: str = "latest"
    overlap: bool = True
    timezone: str = "UTC"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "every": self.every,
            "cron": self.cron,
            "task": self.task.to_json(),
            "catch_up": self.catch_up,
            "overlap": self.overlap,
            "timezone": self.timezone,
        }

    @classmethod
    def from_json(cls, data: Any) -> ScheduleSpec:
        if not isinstance(data, dict):
            raise CommandError("schedule: must be an object")
        every, cron = data.get("every"), data.get("cron")
        if (every is None) == (cron is None):
            raise CommandError("schedule: exactly one of every and cron")
        catch_up = _typed(data.get("catch_up", "latest"), str, "catch_up")
        if catch_up not in CATCH_UP:
            raise CommandError(f"catch_up: one of {', '.join(CATCH_UP)}")
        return cls(
            name=_typed(data.get("name"), str, "name"),
            task=TaskSpec.from_json(data.get("task")),
            every=None if every is None else _number(every, "every"),
            cron=_optional_text(cron, "cron"),
            catch_up=catch_up,
            overlap=_typed(data.get("overlap", True), bool, "overlap"),
            timezone=_typed(data.get("timezone", "UTC"), str, "timezone"),
        )


@dataclass(frozen=True, slots=True)
class Assignment:
    task: int
    attempt: int
    worker: int
    incarnation: int  # the worker's incarnation it is meant for


@dataclass(frozen=True, slots=True)
class Placement:
    """A submitted spec started at once, in its submit entry: the spec at `position`
    runs its first attempt on `worker` (at `incarnation`) if the task it creates is
    queued when the entry is applied (the leader saw a free slot and nothing waiting)."""

    position: int
    worker: int
    incarnation: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended: ok with its result, or not with an error message, and
    when a failed task may run again (the leader's backoff)."""

    task: int
    attempt: int
    ok: bool
    value: Any
    retry_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Noop:
    """A new leader's first entry of its term."""


@dataclass(frozen=True, slots=True)
class Submit:
    at: float
    tasks: tuple[TaskSpec, ...]
    rid: str = ""  # the request id: a retry inside the cluster returns the same tasks
    place: tuple[Placement, ...] = ()  # specs that start in this entry (by position)


@dataclass(frozen=True, slots=True)
class Assign:
    at: float
    items: tuple[Assignment, ...]


@dataclass(frozen=True, slots=True)
class Finish:
    at: float
    items: tuple[Outcome, ...]


@dataclass(frozen=True, slots=True)
class Cancel:
    at: float
    task: int


@dataclass(frozen=True, slots=True)
class Retry:
    """A new attempt budget for failed or cancelled tasks (others are left alone)."""

    at: float
    tasks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Trim:
    """Retention, first step: finished tasks lose their arguments, result and attempt
    records (the leader decides which; every peer drops the same)."""

    at: float
    tasks: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Forget:
    """Retention, last step: finished tasks leave the table; their keys keep answering
    for a while. Keys forgotten, and request ids seen, before `keys_before` are let go."""

    at: float
    tasks: tuple[int, ...]
    keys_before: float


@dataclass(frozen=True, slots=True)
class Drain:
    """No new assignments to `peer` (its running attempts finish), or again allowed."""

    at: float
    peer: int
    drained: bool


@dataclass(frozen=True, slots=True)
class Members:
    """The cluster's next membership configuration, replacing the one set at log index
    `base` (0: cluster.toml's). A leader proposes one only when the configuration it
    replaces is committed, and the table applies it only over that very one."""

    at: float
    base: int
    configuration: Configuration


@dataclass(frozen=True, slots=True)
class SchedulePut:
    """Add a schedule, or replace one of that name when `replace` (else a different
    one of that name is left alone: the entry changes nothing)."""

    at: float
    schedule: ScheduleSpec
    replace: bool = False


@dataclass(frozen=True, slots=True)
class ScheduleDelete:
    at: float
    name: str


@dataclass(frozen=True, slots=True)
class SchedulePause:
    at: float
    name: str
    paused: bool  # False: resume (ticks missed while paused are not fired)


@dataclass(frozen=True, slots=True)
class ScheduleSkip:
    """Ticks of a schedule passed over (missed beyond its catch-up, or overlapping a run
    still running), up to and including `due`."""

    at: float
    name: str
    due: float
    count: int
    reason: str  # "missed" | "overlap"


Command = (
    Submit
    | Assign
    | Finish
    | Cancel
    | Noop
    | Retry
    | Drain
    | SchedulePut
    | ScheduleDelete
    | SchedulePause
    | ScheduleSkip
    | Trim
    | Forget
    | Members
)


# ------------------------------------------------------------------------ encode


def encode_command(command: Command) -> str:
    return orjson.dumps(_ENCODERS[type(command)](command)).decode()


def _encode_submit(c: Any) -> dict[str, Any]:
    out = {"op": "submit", "at": c.at, "rid": c.rid, "tasks": [s.to_json() for s in c.tasks]}
    if c.place:
        out["place"] = [[p.position, p.worker, p.incarnation] for p in c.place]
    return out


def _encode_assign(c: Any) -> dict[str, Any]:
    items = [[a.task, a.attempt, a.worker, a.incarnation] for a in c.items]
    return {"op": "assign", "at": c.at, "items": items}


def _encode_finish(c: Any) -> dict[str, Any]:
    items = [[o.task, o.attempt, o.ok, o.value, o.retry_at] for o in c.items]
    return {"op": "finish", "at": c.at, "items": items}


_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {
    Noop: lambda c: {"op": "noop"},
    Submit: _encode_submit,
    Assign: _encode_assign,
    Finish: _encode_finish,
    Cancel: lambda c: {"op": "cancel", "at": c.at, "id": c.task},
    Retry: lambda c: {"op": "retry", "at": c.at, "ids": list(c.tasks)},
    Drain: lambda c: {"op": "drain", "at": c.at, "peer": c.peer, "drained": c.drained},
    SchedulePut: lambda c: {
        "op": "schedule_put",
        "at": c.at,
        "schedule": c.schedule.to_json(),
        "replace": c.replace,
    },
    ScheduleDelete: lambda c: {"op": "schedule_delete", "at": c.at, "name": c.name},
    SchedulePause: lambda c: {
        "op": "schedule_pause",
        "at": c.at,
        "name": c.name,
        "paused": c.paused,
    },
    Trim: lambda c: {"op": "trim", "at": c.at, "ids": list(c.tasks)},
    Forget: lambda c: {
        "op": "forget",
        "at": c.at,
        "ids": list(c.tasks),
        "keys_before": c.keys_before,
    },
    Members: lambda c: {"op": "members", "at": c.at, "base": c.base, **c.configuration.to_json()},
    ScheduleSkip: lambda c: {
        "op": "schedule_skip",
        "at": c.at,
        "name": c.name,
        "due": c.due,
        "count": c.count,
        "reason": c.reason,
    },
}

NOOP_TEXT = encode_command(Noop())
MEMBERS_PREFIX = '{"op":"members"'  # how every `Members` entry's text begins


# ------------------------------------------------------------------------ decode


def decode_command(text: str) -> Command:
    """The command an entry holds; `CommandError` if any part of it is malformed."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CommandError("not JSON") from exc
    if not isinstance(data, dict):
        raise CommandError("a command is a JSON object")
    decoder = _DECODERS.get(data.get("op"))  # type: ignore[arg-type]
    if decoder is None:
        raise CommandError(f"unknown op {data.get('op')!r}")
    try:
        return decoder(data)
    except (KeyError, TypeError) as exc:
        raise CommandError(f"malformed {data.get('op')}: {exc}") from exc


def _decode_submit(data: dict[str, Any]) -> Submit:
    tasks = tuple(TaskSpec.from_json(s) for s in _list(data, "tasks", required=True))
    refs: set[str] = set()
    for spec in tasks:  # `after` may only name specs that come before it
        if spec.after and not refs.issuperset(spec.after):
            raise CommandError("after: names a spec that does not come before it")
        refs.add(spec.ref or "")
    place = _decode_place(data, len(tasks)) if "place" in data else ()
    return Submit(_at(data), tasks, _typed(data.get("rid", ""), str, "rid"), place)


def _decode_place(data: dict[str, Any], count: int) -> tuple[Placement, ...]:
    """The placements of a submit: positions of its specs, each once and in order."""
    place: list[Placement] = []
    for item in _list(data, "place", required=True):
        position, worker, incarnation = (_integer(v, "place") for v in _row(item, 3))
        if not 0 <= position < count or (place and position <= place[-1].position):
            raise CommandError("place: positions must name the specs in order, once each")
        place.append(Placement(position, worker, incarnation))
    return tuple(place)


def _decode_assign(data: dict[str, Any]) -> Assign:
    items = []
    for item in _list(data, "items", required=True):
        task, attempt, worker, incarnation = _row(item, 4)
        items.append(
            Assignment(
                _integer(task, "items"),
                _integer(attempt, "items"),
                _integer(worker, "items"),
                _integer(incarnation, "items"),
            )
        )
    return Assign(_at(data), tuple(items))


def _decode_finish(data: dict[str, Any]) -> Finish:
    items = []
    for item in _list(data, "items", required=True):
        task, attempt, ok, value, retry_at = _row(item, 5)
        outcome = Outcome(
            _integer(task, "items"),
            _integer(attempt, "items"),
            _typed(ok, bool, "items"),
            value,
            _number(retry_at, "items"),
        )
        items.append(outcome)
    return Finish(_at(data), tuple(items))


def _ids(data: dict[str, Any]) -> tuple[int, ...]:
    return tuple(_integer(i, "ids") for i in _list(data, "ids", required=True))


_DECODERS: dict[str, Callable[[dict[str, Any]], Command]] = {
    "noop": lambda data: Noop(),
    "submit": _decode_submit,
    "assign": _decode_assign,
    "finish": _decode_finish,
    "cancel": lambda data: Cancel(_at(data), _integer(data.get("id"), "id")),
    "retry": lambda data: Retry(_at(data), _ids(data)),
    "trim": lambda data: Trim(_at(data), _ids(data)),
    "forget": lambda data: Forget(
        _at(data), _ids(data), _number(data.get("keys_before"), "keys_before")
    ),
    "drain": lambda data: Drain(
        _at(data), _integer(data.get("peer"), "peer"), _typed(data.get("drained"), bool, "drained")
    ),
    "members": lambda data: Members(
        _at(data), _integer(data.get("base"), "base"), Configuration.from_json(data)
    ),
    "schedule_put": lambda data: SchedulePut(
        _at(data),
        ScheduleSpec.from_json(data.get("schedule")),
        _typed(data.get("replace", False), bool, "replace"),
    ),
    "schedule_delete": lambda data: ScheduleDelete(
        _at(data), _typed(data.get("name"), str, "name")
    ),
    "schedule_pause": lambda data: SchedulePause(
        _at(data), _typed(data.get("name"), str, "name"), _typed(data.get("paused"), bool, "paused")
    ),
    "schedule_skip": lambda data: ScheduleSkip(
        _at(data),
        _typed(data.get("name"), str, "name"),
        _number(data.get("due"), "due"),
        _integer(data.get("count"), "count"),
        _typed(data.get("reason"), str, "reason"),
    ),
}
