"""Properties of what a peer decodes from others and accepts from clients.

The peer codec (peer/runtime/wire.py): every message of every kind, with any field
values its types allow, round-trips exactly through `encode_batch` / `decode_batch`;
arbitrary bytes, and well-formed batches with one field swapped for any JSON value,
decode or raise `WireError`, never anything else. The task-spec check
(peer/runtime/validation.py): any JSON value either becomes a spec or raises
`BadRequest`; an accepted spec checked again comes back unchanged.
(tests/test_wire.py holds the hand-picked cases; tests/test_commands.py the log codec.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.registry import Registry
from peer.runtime.validation import (
    BATCH_FIELDS,
    MAX_TEXT,
    BadRequest,
    check_spec,
)
from peer.runtime.wire import _NESTED, KINDS, LIMIT, WireError, decode_batch, encode_batch

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PER_KIND = settings(max_examples=40, deadline=None)
REGISTRY = Registry()
JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


def of_annotation(annotation: str) -> st.SearchStrategy[Any]:
    """Values of a message field's type, as the codec reads the annotation."""
    if annotation.endswith(" | None"):
        return st.none() | of_annotation(annotation[: -len(" | None")])
    if annotation == "int":
        return st.integers(0, LIMIT - 1)
    if annotation == "bool":
        return st.booleans()
    if annotation == "str":
        return st.text(max_size=40)
    if annotation in _NESTED:
        return of_class(_NESTED[annotation])
    if annotation.startswith("tuple[") and annotation.endswith(", ...]"):
        item = of_annotation(annotation[len("tuple[") : -len(", ...]")])
        return st.lists(item, max_size=4).map(tuple)
    raise AssertionError(f"no strategy for {annotation}")


def of_class(cls: type) -> st.SearchStrategy[Any]:
    fields = {f.name: of_annotation(str(f.type)) for f in dataclasses.fields(cls)}
    return st.builds(cls, **fields)


MESSAGES = st.one_of([of_class(cls) for cls in KINDS.values()])


@pytest.mark.parametrize("kind", sorted(KINDS))
@PER_KIND
@given(data=st.data())
def test_every_message_of_every_kind_round_trips(kind: str, data: st.DataObject) -> None:
    message = data.draw(of_class(KINDS[kind]))
    assert decode_batch(encode_batch([message])) == [message]


@BOUNDED
@given(st.lists(MESSAGES, max_size=6))
def test_a_batch_of_mixed_kinds_round_trips_in_order(messages: list[Any]) -> None:
    assert decode_batch(encode_batch(messages)) == messages


@BOUNDED
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_decode_or_raise_wire_error(body: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_batch(body)


@BOUNDED
@given(MESSAGES, st.data())
def test_a_batch_with_one_field_swapped_for_any_json_decodes_or_raises_wire_error(
    message: Any, data: st.DataObject
) -> None:
    [[kind, fields]] = orjson.loads(encode_batch([message]))
    name = data.draw(st.sampled_from([*fields, "not_a_field"]))
    fields[name] = data.draw(JSON)
    try:
        decoded = decode_batch(json.dumps([[kind, fields]]).encode())  # (ints past 64 bits too)
    except WireError:
        return
    assert type(decoded[0]) is type(message)


def near_spec() -> st.SearchStrategy[dict[str, Any]]:
    """Objects with spec fields (and the batch ones a spec must refuse) of any value."""
    names = st.sampled_from(sorted(BATCH_FIELDS | {"colour"}))
    kinds = st.sampled_from([*REGISTRY.kinds, "", "nope"]) | st.text(max_size=3)
    return st.builds(
        lambda kind, rest: {"kind": kind, **rest},
        kinds,
        st.dictionaries(names, JSON, max_size=5),
    ) | st.dictionaries(names, JSON, max_size=5)


@BOUNDED
@given(JSON | near_spec())
def test_any_json_becomes_a_spec_or_a_bad_request(value: Any) -> None:
    try:
        spec = check_spec(value, REGISTRY)
    except BadRequest as exc:
        assert exc.reason  # (the field may be any name the client gave)
        return
    assert isinstance(spec, dict) and spec["kind"] in REGISTRY


TEXT = st.text(min_size=1, max_size=MAX_TEXT)
VALID_SPECS = st.fixed_dictionaries(
    {"kind": st.sampled_from(["echo", "fail"])},
    optional={
        "args": JSON,
        "queue": TEXT,
        "priority": st.integers(-1_000_000, 1_000_000),
        "max_attempts": st.integers(1, 100),
        "timeout": st.none() | st.floats(min_value=1e-9, allow_infinity=False),
        "delay": st.floats(0, 366 * 86400) | st.integers(0, 366 * 86400),
        "depends_on": st.none() | st.lists(st.integers(1, 2**40), max_size=6),
        "key": st.none() | TEXT,
    },
)


@BOUNDED
@given(VALID_SPECS)
def test_an_accepted_spec_checked_again_is_accepted_unchanged(data: dict[str, Any]) -> None:
    try:
        spec = check_spec(data, REGISTRY)
    except BadRequest as exc:  # only an argument too big to keep may be refused
        assert exc.field == "args", exc
        return
    assert check_spec(spec, REGISTRY) == spec
