"""The OpenAPI 3 contract of the public API, served at `GET /openapi.json`.

Owns the document: every public route of `peer.runtime.api` and `peer.runtime.ui` (not
the signed `/peer/...` ones), with its parameters, request bodies (the schemas and
examples of `peer.runtime.openapi_schemas`, exact to what `peer.runtime.validation`
accepts) and answers, the error body for 4xx/5xx, and a `bearerAuth` scheme that every
operation needs except `/health`, `/openapi.json` and the web page. The document is
built and encoded once. Reads no peer state; `tests/test_openapi.py` keeps it true.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from aiohttp import web

from peer.protocol.records import STATES
from peer.runtime.openapi_schemas import EXAMPLES, Schema, component_schemas, integer, ref

VERSION = "0.1.0"
JSON = "application/json"
PUBLIC: list[dict[str, list[str]]] = []  # `security` of an operation that needs no token
MAX_WAIT = 60
MAX_AFTER = 1 << 62

ERRORS = {
    "400": ("the request is refused: the field and why", {"X-Error-Field": "the field"}),
    "401": ("no token, or a wrong one", {}),
    "403": ("the token lacks the role this needs", {}),
    "404": ("no such task, schedule, peer or file", {}),
    "409": ("the request conflicts with the current state", {}),
    "413": ("the body is over `max_body` bytes", {}),
    "429": ("too many connections from this client; retry", {"Retry-After": "seconds"}),
    "503": ("no ready leader, a full disk or too many waiters; retry", {"Retry-After": "seconds"}),
}
WRITE_ERRORS = ("400", "401", "403", "413", "503")


def error_responses() -> dict[str, Any]:
    out = {}
    for status, (description, headers) in ERRORS.items():
        response: dict[str, Any] = {
            "description": description,
            "content": json_content(ref("Error")),
        }
        if headers:
            response["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in headers.items()
            }
        out[status] = response
    return out


def json_content(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def answer(description: str, schema: Schema, media: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def errors(*statuses: str) -> dict[str, Any]:
    return {s: {"$ref": f"#/components/responses/{s}"} for s in statuses}


def body(name: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {JSON: {"schema": ref(name), "example": EXAMPLES[name]}},
    }


def path_param(
    name: str, description: str, pattern: str | None = None, example: str | None = None
) -> dict[str, Any]:
    schema: Schema = {"type": "string", "minLength": 1}
    if pattern:
        schema["pattern"] = pattern
    out: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": schema}
    out["description"] = description
    if example is not None:
        out["example"] = example
    return out


def query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def operation(
    summary: str,
    responses: dict[str, Any],
    *,
    parameters: list[dict[str, Any]] | None = None,
    request: str | None = None,
    public: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "responses": {**responses, **errors("429")}}
    if parameters:
        out["parameters"] = parameters
    if request:
        out["requestBody"] = body(request)
    if public:
        out["security"] = PUBLIC
    return out


TASK_ID = path_param("task_id", "a task id", r"^[0-9]{1,18}$", "1")
PEER = path_param("peer", "a peer id", r"^[0-9]{1,9}$", "1")
SCHEDULE = path_param("name", "a schedule's name", example=EXAMPLES["ScheduleBody"]["name"])


def task_paths() -> dict[str, Any]:
    task = answer("the task", ref("Task"))
    listing = [
        query("state", {"type": "string", "enum": list(STATES)}, "only tasks in this state"),
        query("queue", {"type": "string"}, "only tasks of this queue"),
        query("kind", {"type": "string"}, "only tasks of this kind (empty: any)"),
        query("schedule", {"type": "string"}, "only ticks of this schedule (empty: any)"),
        query("search", {"type": "string"}, "a task id, or part of a key (empty: any)"),
        query("limit", integer(1, 1000), "at most this many tasks (default 100)"),
        query("after", integer(0, MAX_AFTER), "the cursor: tasks with a greater id"),
    ]
    wait = query("wait", {"type": "number", "minimum": 0, "maximum": MAX_WAIT}, "long-poll")
    return {
        "/tasks": {
            "post": operation(
                "submit a task; answered once committed",
                {
                    "201": answer("the new task", ref("Task")),
                    "200": answer("the task submitted before with this key", ref("Task")),
                    **errors(*WRITE_ERRORS),
                },
                request="TaskSpec",
            ),
            "get": operation(
                "tasks, oldest first, a page at a time",
                {"200": answer("a page", ref("TaskList")), **errors("400", "401", "403")},
                parameters=listing,
            ),
        },
        "/tasks/batch": {
            "post": operation(
                "submit tasks together; `ref`/`after` order them (a DAG)",
                {
                    "201": answer("the tasks, in request order", ref("Tasks")),
                    "200": answer("every task was submitted before", ref("Tasks")),
                    **errors(*WRITE_ERRORS),
                },
                request="Batch",
            ),
        },
        "/tasks/{task_id}": {
            "get": operation(
                "one task; `wait` holds the answer until it is terminal",
                {"200": task, **errors("400", "401", "403", "404", "503")},
                parameters=[TASK_ID, wait],
            ),
        },
        "/tasks/{task_id}/cancel": {
            "post": operation(
                "cancel a task",
                {"200": task, **errors("400", "401", "403", "404", "409", "503")},
                parameters=[TASK_ID],
            ),
        },
        "/tasks/{task_id}/retry": {
            "post": operation(
                "a new attempt budget for a failed or cancelled task",
                {"200": task, **errors("400", "401", "403", "404", "409", "503")},
                parameters=[TASK_ID],
            ),
        },
        "/tasks/requeue": {
            "post": operation(
                "retry every failed or cancelled task a filter matches",
                {"200": answer("what was requeued", ref("Requeued")), **errors(*WRITE_ERRORS)},
                request="Requeue",
            ),
        },
    }


def member_paths() -> dict[str, Any]:
    configuration = answer("the configuration in force", ref("Configuration"))
    paths: dict[str, Any] = {
        "/members": {
            "get": operation(
                "the membership configuration: voters and learners",
                {"200": configuration, **errors("401", "403")},
            ),
            "post": operation(
                "add a peer (started with `peer serve --join`) as a learner; the leader "
                "promotes it once caught up (the same request again: 200, no change)",
                {"200": configuration, **errors(*WRITE_ERRORS, "409")},
                request="MemberBody",
            ),
        },
        "/members/{peer}": {
            "delete": operation(
                "remove a member, voter or learner (one change at a time)",
                {"200": configuration, **errors("400", "401", "403", "404", "409", "503")},
                parameters=[PEER],
            ),
        },
    }
    for action, does in (("drain", "no new tasks for a peer"), ("undrain", "tasks again")):
        paths[f"/members/{{peer}}/{action}"] = {
            "post": operation(
                does,
                {
                    "200": answer("done", ref("Drained")),
                    **errors("400", "401", "403", "404", "503"),
                },
                parameters=[PEER],
            )
        }
    return paths


def schedule_paths() -> dict[str, Any]:
    schedule = answer("the schedule", ref("Schedule"))
    replace = query("replace", {"type": "string", "enum": ["0", "1"]}, "1: replace one so named")
    paths: dict[str, Any] = {
        "/schedules": {
            "post": operation(
                "create a periodic task (same body again: 200)",
                {
                    "201": answer("created", ref("Schedule")),
                    "200": answer("the same schedule, or replaced", ref("Schedule")),
                    **errors(*WRITE_ERRORS, "409"),
                },
                parameters=[replace],
                request="ScheduleBody",
            ),
            "get": operation(
                "every schedule, by name",
                {"200": answer("the schedules", ref("Schedules")), **errors("401", "403")},
            ),
        },
        "/schedules/{name}": {
            "parameters": [SCHEDULE],
            "get": operation("one schedule", {"200": schedule, **errors("401", "403", "404")}),
            "delete": operation(
                "delete a schedule",
                {"200": answer("deleted", ref("Deleted")), **errors("401", "403", "404", "503")},
            ),
        },
    }
    for action in ("pause", "resume"):
        paths[f"/schedules/{{name}}/{action}"] = {
            "post": operation(
                f"{action} a schedule",
                {"200": schedule, **errors("401", "403", "404", "503")},
                parameters=[SCHEDULE],
            )
        }
    return paths


def peer_paths() -> dict[str, Any]:
    ready = query("ready", {"type": "string"}, "1 or true: 200 only while a ready leader is known")
    return {
        "/cluster": {
            "get": operation(
                "this peer's view of the cluster",
                {"200": answer("the view", ref("Cluster")), **errors("401", "403")},
            )
        },
        "/health": {
            "get": operation(
                "liveness, or readiness with ?ready=1",
                {"200": answer("alive", ref("Health")), **errors("503")},
                parameters=[ready],
                public=True,
            )
        },
        "/metrics": {
            "get": operation(
                "Prometheus text format",
                {
                    "200": answer("the metrics", {"type": "string"}, "text/plain"),
                    **errors("401", "403"),
                },
            )
        },
        "/openapi.json": {
            "get": operation(
                "this document",
                {"200": answer("the contract", {"type": "object"})},
                public=True,
            )
        },
    }


def web_paths() -> dict[str, Any]:
    page = {"200": answer("the page", {"type": "string"}, "text/html")}
    static = {
        "200": {
            "description": "app.js or style.css",
            "content": {
                "text/javascript": {"schema": {"type": "string"}},
                "text/css": {"schema": {"type": "string"}},
            },
        },
        **errors("404"),
    }
    return {
        "/": {"get": operation("the web page", page, public=True)},
        "/ui/tasks/{task_id}": {
            "get": operation(
                "the web page, showing one task",
                {**page, **errors("404")},
                parameters=[path_param("task_id", "a task id (the page reads it)")],
                public=True,
            )
        },
        "/ui/static/{name}": {
            "get": operation(
                "the page's script and style",
                static,
                parameters=[path_param("name", "app.js or style.css")],
                public=True,
            )
        },
        "/events": {
            "get": operation(
                "server-sent events: this peer's view whenever it changes (endless)",
                {
                    "200": answer(
                        "`event: cluster` frames", {"type": "string"}, "text/event-stream"
                    ),
                    **errors("401", "403", "503"),
                },
            )
        },
    }


def document() -> dict[str, Any]:
    """The contract: every public route, its parameters, bodies and answers."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "bullyq",
            "version": VERSION,
            "description": "A peer-to-peer task cluster. Every peer serves this API; writes "
            "are forwarded to the leader. Errors are {error: {code, message}}.",
        },
        "paths": {
            **task_paths(),
            **member_paths(),
            **schedule_paths(),
            **peer_paths(),
            **web_paths(),
        },
        "components": {
            "schemas": component_schemas(),
            "responses": error_responses(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],
    }


@functools.cache
def encoded() -> bytes:
    """The document as JSON bytes, built once per process."""
    return orjson.dumps(document())


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=encoded(), content_type=JSON)


def add_openapi_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", get_openapi)
