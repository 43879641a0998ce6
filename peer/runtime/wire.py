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
from peer.protocol.log import Entry
from peer.protocol.membership import Gossip, MemberDigest
from peer.protocol.messages import (
    Append,
    AppendReply,
    FetchLog,
    LogChunk,
    PeerMessage,
    ResultItem,
    Results,
    SnapshotChunk,
    SnapshotReply,
)

KINDS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        *ALL_MESSAGES,
        Gossip,
        Append,
        AppendReply,
        FetchLog,
        LogChunk,
        SnapshotChunk,
        SnapshotReply,
        Results,
    )
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


def encode_message(message: PeerMessage) -> bytes:
    """One message, encoded to be joined into a batch by `join_encoded`."""
    return orjson.dumps([type(message).__name__, message])


def join_encoded(parts: list[bytes]) -> bytes:
    """The batch of messages encoded one by one: the same bytes as `encode_batch`."""
    return b"[" + b",".join(parts) + b"]"


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
    return _decoder(cls)(data)


_MISSING = object()
LIMIT = 1 << 62  # integers on the wire are non-negative and below this
MAX_ITEMS = 1024  # items in one tuple field


@functools.cache
def _decoder(cls: type) -> Callable[[Any], Any]:
    """A checking constructor for `cls`, compiled once from its field annotations.

    The checks are written out as straight-line Python and compiled (as `dataclasses`
    does for `__init__`): a peer decodes every frame it receives, and a loop of checker
    calls per field cost several times as much."""
    name = cls.__name__
    env: dict[str, Any] = {
        "WireError": WireError,
        "MISSING": _MISSING,
        "LIMIT": LIMIT,
        "MAX_STRING": MAX_STRING,
        "MAX_ITEMS": MAX_ITEMS,
        "cls": cls,
        "known": frozenset(f.name for f in dataclasses.fields(cls)),
    }
    body = [
        "if data.__class__ is not dict:",
        f"    raise WireError({name + ': fields must be an object'!r})",
        "if not known.issuperset(data):",
        f"    raise WireError({name + ': unknown field '!r} + sorted(set(data) - known)[0])",
    ]
    args = []
    for i, spec in enumerate(dataclasses.fields(cls)):
        value, where = f"v{i}", f"{name}.{spec.name}"
        body.append(f"{value} = data.get({spec.name!r}, MISSING)")
        body.append(f"if {value} is MISSING:")
        if spec.default is not dataclasses.MISSING:
            env[f"default{i}"] = spec.default
            body.append(f"    {value} = default{i}")
            body.append("else:")
        elif spec.default_factory is not dataclasses.MISSING:
            env[f"factory{i}"] = spec.default_factory
            body.append(f"    {value} = factory{i}()")
            body.append("else:")
        else:
            body.append(f"    raise WireError({where + ': missing'!r})")
        checks = _checks(str(spec.type), value, where, env, f"item{i}")
        indent = "    " if body[-1] == "else:" else ""
        body += [indent + line for line in checks] or [indent + "pass"]
        args.append(f"{spec.name}={value}")
    body.append(f"return cls({', '.join(args)})")
    source = "def decode(data):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(source, f"<wire decoder for {name}>", "exec"), env)  # noqa: S102
    decode: Callable[[Any], Any] = env["decode"]
    return decode


def _checks(annotation: str, value: str, where: str, env: dict[str, Any], slot: str) -> list[str]:
    """Lines that check (and convert) the local `value` against `annotation`."""
    if annotation.endswith(" | None"):
        inner = _checks(annotation[: -len(" | None")], value, where, env, slot)
        return [f"if {value} is not None:", *("    " + line for line in inner)]
    if annotation == "int":
        return [
            f"if {value}.__class__ is not int or not 0 <= {value} < LIMIT:",
            f"    raise WireError({where + ': must be a non-negative integer'!r})",
        ]
    if annotation == "bool":
        return [
            f"if {value}.__class__ is not bool:",
            f"    raise WireError({where + ': must be a boolean'!r})",
        ]
    if annotation == "str":
        return [
            f"if {value}.__class__ is not str or len({value}) > MAX_STRING:",
            f"    raise WireError({where + ': must be a string'!r})",
        ]
    if annotation in _NESTED:
        env[slot] = _decoder(_NESTED[annotation])
        return [f"{value} = {slot}({value})"]
    if annotation.startswith("tuple[") and annotation.endswith(", ...]"):
        item = annotation[len("tuple[") : -len(", ...]")]
        item_lines = _checks(item, "x", where, env, slot)
        env[slot + "_each"] = _item_function(item_lines, env)
        return [
            f"if {value}.__class__ is not list or len({value}) > MAX_ITEMS:",
            f"    raise WireError({where + ': must be a list'!r})",
            f"{value} = tuple(map({slot}_each, {value}))",
        ]
    raise TypeError(f"cannot decode type {annotation}")


def _item_function(lines: list[str], env: dict[str, Any]) -> Callable[[Any], Any]:
    """A function of `x` that runs `lines` (checks of one tuple item) and returns `x`."""
    source = "def each(x):\n" + "".join(f"    {line}\n" for line in [*lines, "return x"])
    scope = dict(env)
    exec(compile(source, "<wire item check>", "exec"), scope)  # noqa: S102
    each: Callable[[Any], Any] = scope["each"]
    return each
