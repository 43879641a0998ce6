"""Checking client requests: task specs, batches with `ref`/`after`, list filters.

Every function either returns a normalised value or raises `BadRequest` naming the
field and the reason. Nothing here reads or changes cluster state, so a refused request
changes nothing. A task's `args` nest at most `MAX_ARGS_DEPTH` levels and encode to at
most `MAX_ARGS_BYTES` (every peer's log holds them); a batch has at most
`MAX_BATCH_TASKS` tasks; the body as a whole is bounded by `max_body` (413) before any
of this runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from peer.config import ClusterConfig, ConfigError
from peer.protocol.commands import CATCH_UP, ScheduleSpec
from peer.protocol.due import is_valid_cron
from peer.protocol.records import STATES
from peer.registry import Registry

MAX_BATCH_TASKS = 10_000
MAX_DEPENDS = 1_000
MAX_TEXT = 256
MAX_ARGS_DEPTH = 32  # levels of lists and objects in a task's args
MAX_ARGS_BYTES = 256 << 10  # bytes of a task's args as JSON
SPEC_FIELDS = frozenset(
    {"kind", "args", "queue", "priority", "max_attempts", "timeout", "delay", "depends_on", "key"}
)
BATCH_FIELDS = SPEC_FIELDS | {"ref", "after"}


class BadRequest(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _integer(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int)


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise BadRequest(field, f"must be a string of 1 to {MAX_TEXT} characters")
    return value


def _check_numbers(prefix: str, data: Mapping[str, Any], out: dict[str, Any]) -> None:
    if "priority" in data:
        if not _integer(data["priority"]) or abs(data["priority"]) > 1_000_000:
            raise BadRequest(prefix + "priority", "must be an integer in -1000000..1000000")
        out["priority"] = data["priority"]
    if "max_attempts" in data:
        if not _integer(data["max_attempts"]) or not 1 <= data["max_attempts"] <= 100:
            raise BadRequest(prefix + "max_attempts", "must be an integer in 1..100")
        out["max_attempts"] = data["max_attempts"]
    if data.get("timeout") is not None:
        if not _number(data["timeout"]) or data["timeout"] <= 0:
            raise BadRequest(prefix + "timeout", "must be a positive number of seconds")
        out["timeout"] = float(data["timeout"])
    if "delay" in data:
        if not _number(data["delay"]) or not 0 <= data["delay"] <= 366 * 86400:
            raise BadRequest(prefix + "delay", "must be a non-negative number of seconds")
        out["delay"] = float(data["delay"])


def _check_depends(prefix: str, value: Any) -> list[int]:
    ok = isinstance(value, list) and len(value) <= MAX_DEPENDS
    if not ok or not all(_integer(v) and v > 0 for v in value):
        raise BadRequest(prefix + "depends_on", "must be a list of task ids")
    return list(dict.fromkeys(value))


def check_spec(
    data: Any, registry: Registry, prefix: str = "", batch: bool = False
) -> dict[str, Any]:
    """A normalised task spec (only the fields given, checked) from a request body."""
    if not isinstance(data, dict):
        raise BadRequest(prefix.rstrip(".") or "body", "must be a JSON object")
    allowed = BATCH_FIELDS if batch else SPEC_FIELDS
    if not data.keys() <= allowed:
        raise BadRequest(prefix + sorted(set(data) - allowed)[0], "unknown field")
    if "kind" not in data:
        raise BadRequest(prefix + "kind", "is required")
    kind = _text(prefix + "kind", data["kind"])
    if kind not in registry:
        raise BadRequest(prefix + "kind", f"unknown task kind {kind!r}")
    out: dict[str, Any] = {"kind": kind, "args": data.get("args")}
    _check_args_bounds(prefix + "args", data.get("args"))
    reason = registry.check_args(kind, data.get("args"))
    if reason:
        raise BadRequest(prefix + "args", reason)
    if "queue" in data:
        out["queue"] = _text(prefix + "queue", data["queue"])
    _check_numbers(prefix, data, out)
    if data.get("depends_on") is not None:
        out["depends_on"] = _check_depends(prefix, data["depends_on"])
    for name in ("key", "ref") if batch else ("key",):
        if data.get(name) is not None:
            out[name] = _text(prefix + name, data[name])
    if batch and data.get("after") is not None:
        out["after"] = _check_after(prefix, data["after"])
    return out


def nesting(value: Any, limit: int) -> int:
    """How many levels of lists and objects `value` has (a scalar: 0), counted without
    recursion, and only up to `limit + 1`."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        deepest = max(deepest, depth)
        if depth > limit:
            break
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _check_args_bounds(field: str, args: Any) -> None:
    if isinstance(args, dict | list) and nesting(args, MAX_ARGS_DEPTH) > MAX_ARGS_DEPTH:
        raise BadRequest(field, f"nests deeper than {MAX_ARGS_DEPTH} levels of lists and objects")
    try:
        size = len(orjson.dumps(args))
    except TypeError:  # (a value JSON cannot hold: only possible from inside a peer)
        raise BadRequest(field, "must be JSON") from None
    if size > MAX_ARGS_BYTES:
        raise BadRequest(field, f"is {size} bytes as JSON, over the limit of {MAX_ARGS_BYTES}")


def _check_after(prefix: str, after: Any) -> list[str]:
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        raise BadRequest(prefix + "after", "must be a list of refs")
    return list(dict.fromkeys(after))


def check_batch(data: Any, registry: Registry) -> tuple[list[dict[str, Any]], list[int]]:
    """Specs in an order where every `after` names an earlier ref, and for each spec of
    that order its position in the request. A cycle or an unknown ref is refused."""
    if not isinstance(data, dict) or set(data) != {"tasks"}:
        raise BadRequest("tasks", 'body must be {"tasks": [...]}')
    items = data["tasks"]
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH_TASKS:
        raise BadRequest("tasks", f"must be a list of 1 to {MAX_BATCH_TASKS} tasks")
    specs = [check_spec(t, registry, f"tasks[{i}].", batch=True) for i, t in enumerate(items)]
    by_ref: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if "ref" in spec:
            if spec["ref"] in by_ref:
                raise BadRequest(f"tasks[{i}].ref", "is used twice")
            by_ref[spec["ref"]] = i
    for i, spec in enumerate(specs):
        for ref in spec.get("after", ()):
            if ref not in by_ref:
                raise BadRequest(f"tasks[{i}].after", f"names no ref {ref!r} of this batch")
    if not any("after" in spec for spec in specs):
        return specs, list(range(len(specs)))  # (no spec waits for another)
    order = _topological(specs, by_ref)
    return [specs[i] for i in order], order


def _topological(specs: list[dict[str, Any]], by_ref: dict[str, int]) -> list[int]:
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    order: list[int] = []
    for root in range(len(specs)):
        stack = [(root, iter(specs[root].get("after", ())))]
        if state.get(root):
            continue
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child_ref = next(children, None)
            if child_ref is None:
                stack.pop()
                state[node] = 2
                order.append(node)
                continue
            child = by_ref[child_ref]
            if state.get(child) == 1:
                raise BadRequest(f"tasks[{child}].after", "the batch's dependencies form a cycle")
            if not state.get(child):
                state[child] = 1
                stack.append((child, iter(specs[child].get("after", ()))))
    return order


LIST_FILTERS = ("kind", "schedule", "search")


def check_list_query(query: Mapping[str, str]) -> tuple[str | None, str | None, int, int]:
    """(state, queue, limit, after) from `GET /tasks` query parameters; the other
    filters (`kind`, `schedule`, `search`: an id, or part of a key) are taken as given."""
    unknown = sorted(set(query) - {"state", "queue", "limit", "after", *LIST_FILTERS})
    if unknown:
        raise BadRequest(unknown[0], "unknown parameter")
    state = query.get("state")
    if state is not None and state not in STATES:
        raise BadRequest("state", f"must be one of {', '.join(STATES)}")
    limit = _int_param(query, "limit", 100, 1, 1000)
    after = _int_param(query, "after", 0, 0, 1 << 62)
    return state, query.get("queue"), limit, after


def _int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise BadRequest(name, f"must be an integer in {low}..{high}")
    return int(raw)


def check_wait(raw: str | None) -> float:
    if raw is None:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        raise BadRequest("wait", "must be a number of seconds") from None
    if not 0 <= seconds <= 60:
        raise BadRequest("wait", "must be between 0 and 60 seconds")
    return seconds


MIN_EVERY = 0.5  # seconds: the shortest period a schedule may have
MAX_EVERY = 366 * 86400
SCHEDULE_FIELDS = frozenset({"name", "every", "cron", "task", "catch_up", "overlap", "timezone"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_schedule(data: Any, registry: Registry) -> dict[str, Any]:
    """A normalised schedule (the JSON of a `ScheduleSpec`) from a request body or a
    `[[schedule]]` table; its `task` is checked exactly as a `POST /tasks` body."""
    if not isinstance(data, dict):
        raise BadRequest("body", "must be a JSON object")
    unknown = sorted(set(data) - SCHEDULE_FIELDS)
    if unknown:
        raise BadRequest(unknown[0], "unknown field")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadRequest("name", "must be 1 to 100 letters, digits, '_', '.' or '-'")
    out: dict[str, Any] = {"name": name, **_check_rhythm(data)}
    if "task" not in data:
        raise BadRequest("task", "is required (a POST /tasks body)")
    task = check_spec(data["task"], registry, "task.")
    if "key" in task:
        raise BadRequest("task.key", "a schedule keys each tick itself")
    out["task"] = task
    catch_up = data.get("catch_up", "latest")
    if catch_up not in CATCH_UP:
        raise BadRequest("catch_up", f"must be one of {', '.join(CATCH_UP)}")
    overlap = data.get("overlap", True)
    if not isinstance(overlap, bool):
        raise BadRequest("overlap", "must be true or false")
    out.update(catch_up=catch_up, overlap=overlap, timezone=_check_zone(data))
    return out


def _check_rhythm(data: Mapping[str, Any]) -> dict[str, Any]:
    every, cron = data.get("every"), data.get("cron")
    if (every is None) == (cron is None):
        raise BadRequest("every", "give exactly one of every (seconds) and cron")
    if every is not None:
        if not _number(every) or not MIN_EVERY <= every <= MAX_EVERY:
            raise BadRequest("every", f"must be a number of seconds, at least {MIN_EVERY}")
        return {"every": float(every)}
    if not isinstance(cron, str) or not is_valid_cron(cron):
        raise BadRequest("cron", "must be a cron expression: 5 fields, or 6 with seconds first")
    return {"cron": " ".join(cron.split())}


def _check_zone(data: Mapping[str, Any]) -> str:
    zone = data.get("timezone", "UTC")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise BadRequest("timezone", "must be an IANA time zone name, e.g. Europe/Paris") from None
    return str(zone)


def declared_schedules(config: ClusterConfig, registry: Registry) -> tuple[ScheduleSpec, ...]:
    """The `[[schedule]]` tables of `cluster.toml`, checked as `POST /schedules` bodies;
    `ConfigError` naming the table and field on the first bad one."""
    specs = []
    for i, table in enumerate(config.schedules):
        try:
            specs.append(ScheduleSpec.from_json(check_schedule(table, registry)))
        except BadRequest as exc:
            raise ConfigError(f"schedule[{i}].{exc.field}: {exc.reason}") from None
    return tuple(specs)


MAX_REQUEUE = 10_000
REQUEUE_FIELDS = frozenset({"state", "queue", "kind", "limit"})


def check_requeue(data: Any) -> dict[str, Any]:
    """A `POST /tasks/requeue` filter: `state` (failed or cancelled; default failed),
    `queue`, `kind`, `limit` (at most 10,000 tasks in one entry; default 1,000)."""
    if not isinstance(data, dict):
        raise BadRequest("body", "must be a JSON object")
    unknown = sorted(set(data) - REQUEUE_FIELDS)
    if unknown:
        raise BadRequest(unknown[0], "unknown field")
    state = data.get("state", "failed")
    if state not in ("failed", "cancelled"):
        raise BadRequest("state", "must be failed or cancelled")
    out: dict[str, Any] = {"state": state, "limit": data.get("limit", 1000)}
    if not _integer(out["limit"]) or not 1 <= out["limit"] <= MAX_REQUEUE:
        raise BadRequest("limit", f"must be an integer in 1..{MAX_REQUEUE}")
    for name in ("queue", "kind"):
        if data.get(name) is not None:
            out[name] = _text(name, data[name])
    return out
