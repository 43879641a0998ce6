"""The OpenAPI contract (peer/runtime/openapi.py) is kept true: it is a valid OpenAPI 3
document; every public route `build_app` registers is in it with its method, and every
path it names is a route; every request example fits its schema and is accepted by the
validator the handler runs; the schemas refuse what the validators refuse."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from aiohttp import web
from openapi_spec_validator import validate

from peer.config import ClusterConfig, NodeAddress
from peer.registry import Registry
from peer.runtime.api import build_app
from peer.runtime.member_routes import check_member
from peer.runtime.node import Node
from peer.runtime.openapi import document, encoded
from peer.runtime.validation import (
    BadRequest,
    check_batch,
    check_requeue,
    check_schedule,
    check_spec,
)

DOC = document()
REGISTRY = Registry()
CHECKS: dict[str, Callable[[Any], object]] = {
    "TaskSpec": lambda body: check_spec(body, REGISTRY),
    "Batch": lambda body: check_batch(body, REGISTRY),
    "Requeue": check_requeue,
    "ScheduleBody": lambda body: check_schedule(body, REGISTRY),
    "MemberBody": lambda body: check_member(body, "http"),
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[web.Application]:
    """The app of one peer, built as `peer serve` builds it, never started."""
    data = tmp_path_factory.mktemp("openapi")
    config = ClusterConfig(nodes=(NodeAddress(1, "127.0.0.1", 1),), data_dir=str(Path(data)))
    node = Node(config, 1, REGISTRY)
    yield build_app(node, REGISTRY)
    node.storage.close()


def routes_of(app: web.Application) -> set[tuple[str, str]]:
    """(method, OpenAPI path) of every public route; `{action:a|b}` becomes both paths."""
    out = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        raw = info.get("path") or info.get("formatter") or ""
        if raw.startswith("/peer/") or route.method == "HEAD":
            continue
        choices = dict(re.findall(r"\(\?P<(\w+)>(\w+(?:\|\w+)+)\)", str(info.get("pattern"))))
        for path in expand(raw, choices):
            out.add((route.method.lower(), path))
    return out


def expand(path: str, choices: dict[str, str]) -> list[str]:
    """`path` with each `{name}` whose regex is a choice (`a|b`) made each choice."""
    for name, alternatives in choices.items():
        rest = {k: v for k, v in choices.items() if k != name}
        return [
            p
            for choice in alternatives.split("|")
            for p in expand(path.replace("{" + name + "}", choice), rest)
        ]
    return [path]


def documented() -> set[tuple[str, str]]:
    methods = {"get", "post", "put", "delete", "patch"}
    return {(m, path) for path, item in DOC["paths"].items() for m in item if m in methods}


def resolve(schema: Any) -> Any:
    """`schema` with every local `$ref` replaced by what it names, `nullable` made a
    JSON Schema type (as OpenAPI 3.0 means it)."""
    if isinstance(schema, list):
        return [resolve(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return resolve(DOC["components"]["schemas"][name])
    out = {key: resolve(value) for key, value in schema.items() if key != "nullable"}
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def validator(name: str) -> jsonschema.Draft4Validator:
    return jsonschema.Draft4Validator(resolve(DOC["components"]["schemas"][name]))


def request_examples() -> Iterator[tuple[str, str, Any]]:
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            content = op.get("requestBody", {}).get("content", {}) if method != "parameters" else {}
            for media in content.values():
                name = media["schema"]["$ref"].rsplit("/", 1)[-1]
                yield f"{method.upper()} {path}", name, media["example"]


def test_the_document_is_valid_openapi_3() -> None:
    assert DOC["openapi"].startswith("3.0.")
    validate(DOC)


def test_the_encoded_document_is_built_once_and_is_the_document() -> None:
    assert encoded() is encoded()
    assert orjson.loads(encoded()) == DOC


def test_every_public_route_is_documented_and_every_documented_path_is_a_route(
    app: web.Application,
) -> None:
    routes = routes_of(app)
    assert ("post", "/tasks") in routes and ("get", "/events") in routes  # the walk works
    assert routes - documented() == set(), "routes missing from the document"
    assert documented() - routes == set(), "documented paths that are no route"


def test_the_signed_peer_routes_are_not_documented() -> None:
    assert not [path for path in DOC["paths"] if path.startswith("/peer")]


def test_every_write_needs_a_token_and_the_public_routes_none() -> None:
    assert DOC["security"] == [{"bearerAuth": []}]
    assert DOC["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    public = {
        path
        for path, item in DOC["paths"].items()
        for method, op in item.items()
        if method != "parameters" and op.get("security") == []
    }
    assert public == {"/health", "/openapi.json", "/", "/ui/tasks/{task_id}", "/ui/static/{name}"}


def test_every_operation_documents_its_errors_with_the_error_body() -> None:
    error = DOC["components"]["responses"]
    for status in ("400", "401", "403", "404", "409", "413", "429", "503"):
        assert error[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
    for path, item in DOC["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert any(s.startswith("2") for s in op["responses"]), (method, path)
            if "requestBody" in op:
                assert {"400", "413"} <= set(op["responses"]), (method, path)


@pytest.mark.parametrize(("operation", "name", "example"), list(request_examples()))
def test_every_request_example_fits_its_schema_and_its_validator(
    operation: str, name: str, example: Any
) -> None:
    validator(name).validate(example)
    CHECKS[name](example)


def test_every_request_body_has_an_example() -> None:
    bodies = [
        (path, method)
        for path, item in DOC["paths"].items()
        for method, op in item.items()
        if method != "parameters" and "requestBody" in op
    ]
    assert len(bodies) == len(list(request_examples())) == 5


REFUSED = [
    ("TaskSpec", {"kind": "echo", "colour": "red"}),
    ("TaskSpec", {"args": 1}),
    ("TaskSpec", {"kind": ""}),
    ("TaskSpec", {"kind": "echo", "priority": 1_000_001}),
    ("TaskSpec", {"kind": "echo", "priority": True}),
    ("TaskSpec", {"kind": "echo", "max_attempts": 0}),
    ("TaskSpec", {"kind": "echo", "timeout": 0}),
    ("TaskSpec", {"kind": "echo", "delay": None}),
    ("TaskSpec", {"kind": "echo", "delay": 366 * 86400 + 1}),
    ("TaskSpec", {"kind": "echo", "depends_on": [0]}),
    ("TaskSpec", {"kind": "echo", "key": "x" * 257}),
    ("TaskSpec", {"kind": "echo", "ref": "a"}),
    ("Batch", {"tasks": []}),
    ("Batch", {"tasks": [{"kind": "echo"}], "more": 1}),
    ("Batch", {"tasks": [{"kind": "echo", "after": "a"}]}),
    ("Requeue", {"state": "queued"}),
    ("Requeue", {"limit": 10_001}),
    ("Requeue", {"limit": None}),
    ("ScheduleBody", {"name": "a", "task": {"kind": "echo"}}),
    ("ScheduleBody", {"name": "a", "every": 1, "cron": "* * * * *", "task": {"kind": "echo"}}),
    ("ScheduleBody", {"name": "a", "every": 0.1, "task": {"kind": "echo"}}),
    ("ScheduleBody", {"name": "-a", "every": 1, "task": {"kind": "echo"}}),
    ("ScheduleBody", {"name": "a", "every": 1, "task": {"kind": "echo", "key": "k"}}),
    ("ScheduleBody", {"name": "a", "every": 1, "task": {"kind": "echo"}, "overlap": 1}),
    ("MemberBody", {"id": 6}),
    ("MemberBody", {"id": 0, "url": "http://h:1"}),
    ("MemberBody", {"id": 6, "url": "http://h"}),
    ("MemberBody", {"id": 6, "url": "http://h:1/x"}),
    ("MemberBody", {"id": 6, "url": "http://u@h:1"}),
    ("MemberBody", {"id": 6, "url": "http://h:1", "voter": True}),
]
ACCEPTED = [
    ("TaskSpec", {"kind": "echo", "timeout": None, "depends_on": None, "key": None}),
    ("TaskSpec", {"kind": "echo", "args": None, "delay": 0, "priority": -1_000_000}),
    ("Batch", {"tasks": [{"kind": "echo", "ref": None, "after": None}]}),
    ("Requeue", {}),
    ("Requeue", {"queue": None, "kind": None, "state": "cancelled", "limit": 10_000}),
    ("ScheduleBody", {"name": "a", "every": None, "cron": "* * * * *", "task": {"kind": "echo"}}),
    ("ScheduleBody", {"name": "a.b-c_9", "every": 0.5, "task": {"kind": "echo", "key": None}}),
    ("MemberBody", {"id": 2147483647, "url": "http://10.0.0.7:7006/"}),
]


@pytest.mark.parametrize(("name", "body"), REFUSED)
def test_a_body_the_validator_refuses_the_schema_refuses(name: str, body: Any) -> None:
    with pytest.raises(BadRequest):
        CHECKS[name](body)
    assert not validator(name).is_valid(body)


@pytest.mark.parametrize(("name", "body"), ACCEPTED)
def test_a_body_the_validator_accepts_the_schema_accepts(name: str, body: Any) -> None:
    CHECKS[name](body)
    validator(name).validate(body)


def test_a_schedule_name_with_a_trailing_newline_is_refused() -> None:
    # The pattern's `$` is ECMA's (end of text); Python's `re.match` also let "a\n" in.
    with pytest.raises(BadRequest, match="name"):
        check_schedule({"name": "a\n", "every": 1, "task": {"kind": "echo"}}, REGISTRY)
