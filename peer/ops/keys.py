"""The command line of `run_cluster.py`: `k N` kills a peer, `r N` restarts it, `q` quits.

Owns: parsing a command line (`parse_command`), the one-line input buffer fed raw keys
(`LineEditor`), and reading stdin from the event loop (`stdin_commands`, cbreak mode on a
terminal). It only hands lines to a callback; carrying commands out is `peer.ops.dashboard`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import termios
from collections.abc import Callable, Iterator
from dataclasses import dataclass

HELP = "k N kill · r N restart · q quit · Ctrl-C stops all"


@dataclass(frozen=True, slots=True)
class Command:
    action: str  # "kill" | "restart" | "quit"
    node_id: int | None = None


_COMMAND = re.compile(r"^\s*(k|kill|r|restart)\s*(\d+)\s*$")


def parse_command(line: str) -> Command | None:
    if line.strip() in ("q", "quit"):
        return Command("quit")
    match = _COMMAND.match(line)
    if match is None:
        return None
    action = "kill" if match.group(1).startswith("k") else "restart"
    return Command(action, int(match.group(2)))


class LineEditor:
    """A one-line input buffer fed raw characters; `q` on an empty line can act at once."""

    def __init__(self, instant_quit: bool) -> None:
        self.pending = ""
        self._instant_quit = instant_quit

    def feed(self, chars: str) -> list[str]:
        lines = []
        for ch in chars:
            if ch in "\r\n":
                lines.append(self.pending)
                self.pending = ""
            elif ch in "\x7f\b":
                self.pending = self.pending[:-1]
            elif ch == "\x1b":
                self.pending = ""
            elif ch == "q" and self._instant_quit and not self.pending.strip():
                lines.append("q")
            elif ch.isprintable() and len(self.pending) < 24:
                self.pending += ch
        return lines


@contextlib.contextmanager
def stdin_commands(on_line: Callable[[str], None], keys: bool) -> Iterator[LineEditor]:
    """Feed stdin lines to `on_line` from the event loop; with `keys` and a tty, read keys
    (cbreak, no echo) so typing does not disturb the live display."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    is_tty = fd >= 0 and os.isatty(fd)
    editor = LineEditor(instant_quit=keys and is_tty)
    if is_tty and os.tcgetpgrp(fd) != os.getpgrp():
        yield editor  # started in the background: reading the terminal would stop us
        return
    saved = termios.tcgetattr(fd) if keys and is_tty else None
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = os.read(fd, 256)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)  # EOF: no more commands, keep running
        for line in editor.feed(data.decode(errors="replace")):
            on_line(line)

    try:
        if saved is not None:
            keys_mode = termios.tcgetattr(fd)
            keys_mode[3] &= ~(termios.ICANON | termios.ECHO)
            keys_mode[6][termios.VMIN], keys_mode[6][termios.VTIME] = 1, 0
            termios.tcsetattr(fd, termios.TCSANOW, keys_mode)
        with contextlib.suppress(OSError, ValueError):  # e.g. stdin is a regular file
            loop.add_reader(fd, readable)
        yield editor
    finally:
        with contextlib.suppress(OSError, ValueError):
            loop.remove_reader(fd)
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
