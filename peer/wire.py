"""The one codec between peers: typed messages <-> JSON bytes (orjson), strictly checked.

A batch on the wire is `[[kind, {field: value}], ...]`. Decoding checks every field
against the dataclass's annotation and raises `WireError` on anything else, so a forged
or garbled message never reaches the protocol core as a half-valid object.
"""

from __future__ import annotations

import dataclasses
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


def _build(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise WireError(f"{cls.__name__}: fields must be an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if set(data) - set(fields):
        raise WireError(f"{cls.__name__}: unknown field {sorted(set(data) - set(fields))[0]}")
    values = {}
    for name, spec in fields.items():
        if name not in data:
            has_default = spec.default is not dataclasses.MISSING
            if has_default or spec.default_factory is not dataclasses.MISSING:
                continue
            raise WireError(f"{cls.__name__}.{name}: missing")
        values[name] = _check(f"{cls.__name__}.{name}", str(spec.type), data[name])
    return cls(**values)


def _check(where: str, annotation: str, value: Any) -> Any:
    if annotation.endswith(" | None"):
        return None if value is None else _check(where, annotation[: -len(" | None")], value)
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 62:
            raise WireError(f"{where}: must be a non-negative integer")
        return value
    if annotation == "bool":
        if not isinstance(value, bool):
            raise WireError(f"{where}: must be a boolean")
        return value
    if annotation == "str":
        if not isinstance(value, str) or len(value) > MAX_STRING:
            raise WireError(f"{where}: must be a string")
        return value
    if annotation in _NESTED:
        return _build(_NESTED[annotation], value)
    if annotation.startswith("tuple[") and annotation.endswith(", ...]"):
        if not isinstance(value, list) or len(value) > 1024:
            raise WireError(f"{where}: must be a list")
        inner = annotation[len("tuple[") : -len(", ...]")]
        return tuple(_check(where, inner, v) for v in value)
    raise WireError(f"{where}: cannot decode type {annotation}")
