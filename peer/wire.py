"""The one codec between peers: typed messages <-> JSON bytes (orjson), strictly checked.

A batch on the wire is `[[kind, {field: value}], ...]`. Decoding checks every field
against the dataclass's annotation and raises `WireError` on anything else, so a forged
or garbled message never reaches the protocol core as a half-valid object.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import orjson

from election.messages import ALL_MESSAGES, LogPosition
from peer.core import PeerMessage
from peer.execution import ResultItem, Results
from peer.log import Append, AppendReply, Entry, FetchLog, LogChunk
from peer.membership import Gossip, MemberDigest

KINDS: dict[str, type] = {
    cls.__name__: cls
    for cls in (*ALL_MESSAGES, Gossip, Append, AppendReply, FetchLog, LogChunk, Results)
}
_NESTED: dict[str, type] = {
    "LogPosition": LogPosition,
    "MemberDigest": MemberDigest,
    "Entry": Entry,
    "ResultItem": ResultItem,
}
MAX_STRING = 64 << 20


class WireError(ValueError):
    """Bytes that are not a well-formed batch of peer messages."""


def encode_batch(messages: list[PeerMessage]) -> bytes:
    return orjson.dumps([[type(m).__name__, m] for m in messages])


def decode_batch(body: bytes) -> list[PeerMessage]:
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireError("body is not JSON") from exc
    if not isinstance(raw, list):
        raise WireError("a batch must be a list")
    out = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise WireError("each message must be [kind, fields]")
        cls = KINDS.get(item[0])
        if cls is None:
            raise WireError(f"unknown message kind {item[0]!r}")
        out.append(_build(cls, item[1]))
    return out


Checker = Callable[[str, Any], Any]


def _build(cls: type, data: Any) -> Any:
    return _decoder(cls)(data)


@functools.cache
def _decoder(cls: type) -> Callable[[Any], Any]:
    """A checking constructor for `cls`, compiled once from its field annotations."""
    name = cls.__name__
    fields = []
    for spec in dataclasses.fields(cls):
        optional = spec.default is not dataclasses.MISSING
        optional = optional or spec.default_factory is not dataclasses.MISSING
        fields.append((spec.name, f"{name}.{spec.name}", _checker(str(spec.type)), optional))
    known = frozenset(f[0] for f in fields)

    def decode(data: Any) -> Any:
        if not isinstance(data, dict):
            raise WireError(f"{name}: fields must be an object")
        if not known.issuperset(data):
            raise WireError(f"{name}: unknown field {sorted(set(data) - known)[0]}")
        values = {}
        for field, where, check, optional in fields:
            if field in data:
                values[field] = check(where, data[field])
            elif not optional:
                raise WireError(f"{where}: missing")
        return cls(**values)

    return decode


def _checker(annotation: str) -> Checker:
    if annotation.endswith(" | None"):
        inner = _checker(annotation[: -len(" | None")])
        return lambda where, value: None if value is None else inner(where, value)
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    if annotation in _NESTED:
        nested = _NESTED[annotation]
        return lambda where, value: _decoder(nested)(value)
    if annotation.startswith("tuple[") and annotation.endswith(", ...]"):
        item = _checker(annotation[len("tuple[") : -len(", ...]")])

        def check_tuple(where: str, value: Any) -> tuple[Any, ...]:
            if not isinstance(value, list) or len(value) > 1024:
                raise WireError(f"{where}: must be a list")
            return tuple(item(where, v) for v in value)

        return check_tuple
    raise TypeError(f"cannot decode type {annotation}")


def _int(where: str, value: Any) -> int:
    if value.__class__ is not int or not 0 <= value < 1 << 62:
        raise WireError(f"{where}: must be a non-negative integer")
    return value


def _bool(where: str, value: Any) -> bool:
    if value.__class__ is not bool:
        raise WireError(f"{where}: must be a boolean")
    return value


def _str(where: str, value: Any) -> str:
    if value.__class__ is not str or len(value) > MAX_STRING:
        raise WireError(f"{where}: must be a string")
    return value


_SCALARS: dict[str, Checker] = {"int": _int, "bool": _bool, "str": _str}
