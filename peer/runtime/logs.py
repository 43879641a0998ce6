"""A peer's log lines: readable on a terminal, JSON lines otherwise (or as asked).

Standard logging with two small formatters. Every record carries `node` and the
current `term` (read from the running peer's core when the line is written), and the
`event` and `task` a caller passes in `extra` (the driver logs each typed core event
with its name); JSON lines have the fields `ts`, `level`, `node`, `event`, `term`,
`task`, `logger`, `msg`. No framework of our own: `configure` installs one handler.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

FORMATS = ("auto", "console", "json")


class PeerContext(logging.Filter):
    """Puts this peer's id and current term on every record."""

    def __init__(self, node_id: int) -> None:
        super().__init__()
        self.node_id = node_id
        self.term: Callable[[], int] | None = None  # set once the peer's core exists

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node_id
        if getattr(record, "term", None) is None:
            record.term = self.term() if self.term is not None else None
        return True


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "node": getattr(record, "node", None),
            "event": getattr(record, "event", "log"),
            "term": getattr(record, "term", None),
            "task": getattr(record, "task", None),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class Console(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s peer-%(node)s %(levelname)s term %(term)s: %(message)s")


def configure(
    node_id: int, level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None
) -> PeerContext:
    """One handler on the root logger, in `fmt` (`auto`: console on a terminal, JSON
    lines otherwise); the returned context is told the term once the core exists."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    handler = logging.StreamHandler(out)
    context = PeerContext(node_id)
    handler.addFilter(context)
    handler.setFormatter(JsonLines() if fmt == "json" else Console())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return context
