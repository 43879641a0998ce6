"""Checking the fields of a log command's JSON: each function takes a value (and the
field's name, for the error) and returns it typed, or raises `CommandError` naming the
field. `SPEC_CHECKS` says how each field of a task spec is checked. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class CommandError(ValueError):
    """Text that is not a well-formed log command."""


def typed(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind):
        raise CommandError(f"{name}: must be {kind.__name__}")
    return value


def integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandError(f"{name}: must be an integer")
    return value


def number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandError(f"{name}: must be a number")
    return float(value)


def optional_text(value: Any, name: str) -> str | None:
    return None if value is None else typed(value, str, name)


def optional_number(value: Any, name: str) -> float | None:
    return None if value is None else number(value, name)


def text(value: Any, name: str) -> str:
    return typed(value, str, name)  # type: ignore[no-any-return]


def as_is(value: Any, name: str) -> Any:
    return value


def integers(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise CommandError(f"{name}: must be a list")
    return tuple(integer(v, name) for v in value)


def texts(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise CommandError(f"{name}: must be a list")
    return tuple(typed(v, str, name) for v in value)


def at(data: dict[str, Any]) -> float:
    return number(data.get("at"), "at")


def row(item: Any, width: int) -> list[Any]:
    if not isinstance(item, list) or len(item) != width:
        raise CommandError(f"items: each item is a list of {width}")
    return item


def list_field(data: dict[str, Any], name: str, required: bool = False) -> list[Any]:
    if required and name not in data:
        raise CommandError(f"{name}: missing")
    value = data.get(name, [])
    if not isinstance(value, list):
        raise CommandError(f"{name}: must be a list")
    return value


# how each field of a task spec is checked (and converted) from JSON
SPEC_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "kind": text,
    "args": as_is,
    "queue": text,
    "priority": integer,
    "max_attempts": integer,
    "timeout": optional_number,
    "delay": number,
    "depends_on": integers,
    "key": optional_text,
    "ref": optional_text,
    "after": texts,
    "schedule": optional_text,
    "due": optional_number,
}
