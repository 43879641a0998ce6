"""The JSON schemas of the OpenAPI contract: request bodies, answers, the error body.

Request-body schemas say exactly what `peer.runtime.validation` accepts (types, bounds,
which fields may be null, no unknown fields), so a body valid here is refused only for
what a schema cannot say (an unregistered kind, a bad cron expression, a `depends_on` id
no task has). Answer schemas follow the `to_json` of tasks, schedules and the cluster
view. Plain data built by small helpers; `peer.runtime.openapi` assembles the paths.
Owns no state and reads nothing of a peer.
"""

from __future__ import annotations

from typing import Any

from peer.protocol.commands import CATCH_UP
from peer.protocol.records import STATES
from peer.runtime.member_routes import MAX_PEER_ID
from peer.runtime.validation import (
    MAX_BATCH_TASKS,
    MAX_DEPENDS,
    MAX_EVERY,
    MAX_REQUEUE,
    MAX_TEXT,
    MIN_EVERY,
)

Schema = dict[str, Any]

MAX_PRIORITY = 1_000_000
MAX_ATTEMPTS = 100
MAX_DELAY = 366 * 86400
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


MEMBER_URL = r"^https?://[^/?#@\s]+:[0-9]{1,5}/?$"  # (the scheme is checked per cluster)


def text(nullable: bool = False, description: str = "") -> Schema:
    """A string of 1 to `MAX_TEXT` characters (the validators' `_text`)."""
    out: Schema = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
    if nullable:
        out["nullable"] = True
    if description:
        out["description"] = description
    return out


def integer(low: int | None = None, high: int | None = None, nullable: bool = False) -> Schema:
    out: Schema = {"type": "integer"}
    if low is not None:
        out["minimum"] = low
    if high is not None:
        out["maximum"] = high
    if nullable:
        out["nullable"] = True
    return out


def number(nullable: bool = False) -> Schema:
    return {"type": "number", "nullable": True} if nullable else {"type": "number"}


def array(items: Schema, max_items: int | None = None, nullable: bool = False) -> Schema:
    out: Schema = {"type": "array", "items": items}
    if max_items is not None:
        out["maxItems"] = max_items
    if nullable:
        out["nullable"] = True
    return out


def closed(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """An object with these fields only (the validators refuse unknown ones)."""
    out: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


def record(properties: dict[str, Schema]) -> Schema:
    """An answer object: every field listed is always there; more may be added later."""
    return {"type": "object", "properties": properties, "required": list(properties)}


def spec_fields(batch: bool = False, keyed: bool = True) -> dict[str, Schema]:
    """The fields of a task spec as `check_spec` takes them (`batch`: with `ref`/`after`;
    not `keyed`: `key` must be left out or null, as in a schedule's task)."""
    fields: dict[str, Schema] = {
        "kind": text(description="a registered task kind: echo, sleep, fail, user kinds"),
        "args": {"description": 'any JSON; sleep needs {"seconds": n}, shell {"cmd": [...]}'},
        "queue": text(),
        "priority": integer(-MAX_PRIORITY, MAX_PRIORITY),
        "max_attempts": integer(1, MAX_ATTEMPTS),
        "timeout": {**number(nullable=True), "minimum": 0, "exclusiveMinimum": True},
        "delay": {**number(), "minimum": 0, "maximum": MAX_DELAY},
        "depends_on": array(integer(1), MAX_DEPENDS, nullable=True),
        "key": text(nullable=True)
        if keyed
        else {"type": "string", "nullable": True, "enum": [None]},
    }
    if batch:
        fields["ref"] = text(nullable=True, description="a name other tasks' `after` use")
        fields["after"] = array({"type": "string"}, nullable=True)
    return fields


def rhythm_choice() -> list[Schema]:
    """Exactly one of `every` and `cron` is given and not null."""
    return [
        {"required": ["every"], "properties": {"every": {"type": "number"}}},
        {"required": ["cron"], "properties": {"cron": {"type": "string"}}},
    ]


def schedule_body() -> Schema:
    body = closed(
        {
            "name": {"type": "string", "pattern": NAME_PATTERN},
            "every": {**number(nullable=True), "minimum": MIN_EVERY, "maximum": MAX_EVERY},
            "cron": {
                "type": "string",
                "nullable": True,
                "description": "5 cron fields, or 6 with seconds first",
            },
            "task": closed(spec_fields(keyed=False), ("kind",)),
            "catch_up": {"type": "string", "enum": list(CATCH_UP)},
            "overlap": {"type": "boolean"},
            "timezone": {"type": "string", "description": "an IANA time zone name"},
        },
        ("name", "task"),
    )
    body["oneOf"] = rhythm_choice()
    return body


def task_answer() -> Schema:
    return record(
        {
            "id": integer(),
            "kind": {"type": "string"},
            "args": {},
            "queue": {"type": "string"},
            "priority": integer(),
            "state": {"type": "string", "enum": [*STATES, "forgotten"]},
            "attempt": integer(),
            "max_attempts": integer(),
            "timeout": number(nullable=True),
            "worker": integer(nullable=True),
            "incarnation": integer(),
            "result": {},
            "error": {"type": "string", "nullable": True},
            "depends_on": array(integer()),
            "key": {"type": "string", "nullable": True},
            "submitted_at": number(),
            "not_before": number(),
            "started_at": number(nullable=True),
            "finished_at": number(nullable=True),
            "schedule": {"type": "string", "nullable": True},
            "due": number(nullable=True),
            "lateness": number(nullable=True),
            "attempts": array({"type": "object"}),
            "dependents": array(integer()),
            "trimmed": {"type": "boolean"},
        }
    )


def schedule_answer() -> Schema:
    counts = {"type": "object", "additionalProperties": integer()}
    return record(
        {
            "name": {"type": "string"},
            "every": number(nullable=True),
            "cron": {"type": "string", "nullable": True},
            "task": {"type": "object", "required": ["kind"]},
            "catch_up": {"type": "string", "enum": list(CATCH_UP)},
            "overlap": {"type": "boolean"},
            "timezone": {"type": "string"},
            "paused": {"type": "boolean"},
            "created_at": number(),
            "next_due": number(nullable=True),
            "last_due": number(nullable=True),
            "last_task": integer(nullable=True),
            "fired": integer(),
            "skipped": counts,
            "runs": counts,
        }
    )


def configuration_answer() -> Schema:
    """A membership configuration, as `GET /members` shows it."""
    member = record({"id": integer(), "url": {"type": "string"}})
    return record(
        {
            "index": integer(),
            "voters": array(member),
            "learners": array(member),
            "committed": {"type": "boolean"},
        }
    )


def cluster_answer() -> Schema:
    member = record(
        {
            "id": integer(),
            "url": {"type": "string"},
            "status": {"type": "string", "enum": ["alive", "suspect", "dead"]},
            "role": {"type": "string", "nullable": True},
            "term": integer(nullable=True),
            "last_index": integer(nullable=True),
            "commit_index": integer(nullable=True),
            "last_seen_ms": integer(nullable=True),
            "drained": {"type": "boolean"},
            "voter": {"type": "boolean"},
        }
    )
    return record(
        {
            "id": integer(),
            "pid": integer(),
            "url": {"type": "string"},
            "role": {"type": "string", "enum": ["leader", "candidate", "follower"]},
            "term": integer(),
            "leader": integer(nullable=True),
            "ready": {"type": "boolean"},
            "commit_index": integer(),
            "last_index": integer(),
            "log_base": integer(),
            "snapshot_index": integer(nullable=True),
            "catching_up": {"type": "boolean"},
            "behind": integer(),
            "queue_depth": integer(),
            "tasks": {"type": "object", "additionalProperties": integer()},
            "queues": {"type": "object"},
            "schedules": array({"type": "object"}),
            "members": array(member),
            "configuration": {
                "allOf": [configuration_answer()],
                "description": "the configuration in force here; `member`: this peer is one",
            },
            "running": {},
            "done": {},
            "events": array({}),
        }
    )


def error_body() -> Schema:
    detail = record({"code": {"type": "string"}, "message": {"type": "string"}})
    detail["properties"]["field"] = {"type": "string", "description": "the refused field"}
    return record({"error": detail})


def component_schemas() -> dict[str, Schema]:
    """Every named schema of the document (`components.schemas`)."""
    return {
        "Error": error_body(),
        "TaskSpec": closed(spec_fields(), ("kind",)),
        "BatchTask": closed(spec_fields(batch=True), ("kind",)),
        "Batch": closed(
            {"tasks": {**array(ref("BatchTask"), MAX_BATCH_TASKS), "minItems": 1}}, ("tasks",)
        ),
        "Requeue": closed(
            {
                "state": {"type": "string", "enum": ["failed", "cancelled"]},
                "queue": text(nullable=True),
                "kind": text(nullable=True),
                "limit": integer(1, MAX_REQUEUE),
            }
        ),
        "ScheduleBody": schedule_body(),
        "Task": task_answer(),
        "TaskList": record(
            {"tasks": array(ref("Task")), "next": integer(nullable=True)},
        ),
        "Tasks": record({"tasks": array(ref("Task"))}),
        "Requeued": record({"requeued": integer(), "ids": array(integer())}),
        "Drained": record({"peer": integer(), "drained": {"type": "boolean"}}),
        "MemberBody": closed(
            {
                "id": integer(1, MAX_PEER_ID),
                "url": {"type": "string", "maxLength": 300, "pattern": MEMBER_URL},
            },
            ("id", "url"),
        ),
        "Configuration": configuration_answer(),
        "Schedule": schedule_answer(),
        "Schedules": record({"schedules": array(ref("Schedule"))}),
        "Deleted": record({"deleted": {"type": "string"}}),
        "Cluster": cluster_answer(),
        "Health": record(
            {"ok": {"type": "boolean"}, "id": integer(), "leader": integer(nullable=True)}
        ),
    }


EXAMPLES: dict[str, Any] = {
    "TaskSpec": {"kind": "echo", "args": {"hello": "world"}, "queue": "default", "priority": 5},
    "Batch": {
        "tasks": [
            {"kind": "echo", "args": [1], "ref": "first"},
            {"kind": "echo", "args": [2], "after": ["first"]},
        ]
    },
    "Requeue": {"state": "failed", "limit": 100},
    "MemberBody": {"id": 6, "url": "http://127.0.0.1:7006"},
    "ScheduleBody": {"name": "heartbeat", "every": 3600, "task": {"kind": "echo", "args": "hi"}},
}
