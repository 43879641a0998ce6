"""What `run_cluster.py` shows while the peers run: a rich live dashboard, or (headless)
timestamped event lines, fed by polling every peer's `GET /cluster`.

Owns: polling, the event feed derived from successive snapshots (`EventFeed`, pure), the
k/r/q command line read from stdin, and rendering. It starts and stops processes only
through `peer.launcher.Launcher`, and never touches a peer's state other than by reading
its public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import termios
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from peer.config import ClusterConfig
from peer.launcher import STOP_SIGNALS, Launcher, log_path

POLL_INTERVAL = 0.25  # seconds between polls of every peer
POLL_TIMEOUT = 0.5  # seconds before a peer counts as down for this poll
KEEP_EVENTS = 12
HELP = "k N kill · r N restart · q quit · Ctrl-C stops all"
EXTRA_COLUMNS = ("queue_depth", "running", "done")

Snapshot = Mapping[str, Any]
Snapshots = Mapping[int, Snapshot | None]  # None: unreachable or not running


# --- events: a pure function of successive snapshots ---------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    text: str


def agreed_leadership(snapshots: Snapshots) -> tuple[int, int] | None:
    """The (leader, term) reported by more than half of the reachable peers, if any."""
    reachable = [s for s in snapshots.values() if s is not None]
    pairs = Counter(
        (s["leader"], s.get("term", 0)) for s in reachable if s.get("leader") is not None
    )
    for pair, count in pairs.most_common(1):
        if 2 * count > len(reachable):
            return pair
    return None


class EventFeed:
    """Turns successive `/cluster` snapshots into human events; keeps the last few."""

    def __init__(
        self, keep: int = KEEP_EVENTS, on_event: Callable[[Event], None] | None = None
    ) -> None:
        self.recent: deque[Event] = deque(maxlen=keep)
        self._on_event = on_event
        self._seen: set[int] = set()
        self._pids: dict[int, Any] = {}
        self._election_term = 0
        self._leadership: tuple[int, int] | None = None
        self._leadership_known = False

    def update(self, snapshots: Snapshots, now: float) -> list[str]:
        """Record and return the events between the previous snapshots and these."""
        texts = [
            *self._presence(snapshots),
            *self._elections(snapshots),
            *self._leader_change(snapshots),
        ]
        for text in texts:
            self.note(now, text)
        return texts

    def note(self, now: float, text: str) -> None:
        event = Event(now, text)
        self.recent.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def _presence(self, snapshots: Snapshots) -> Iterator[str]:
        for node_id, snap in sorted(snapshots.items()):
            was_up = node_id in self._pids
            if snap is None:
                if was_up:
                    del self._pids[node_id]
                    yield f"peer {node_id} stopped"
                continue
            pid = snap.get("pid")
            if not was_up:
                yield (
                    f"peer {node_id} is back" if node_id in self._seen else f"peer {node_id} is up"
                )
            elif self._pids[node_id] != pid:
                yield f"peer {node_id} restarted"
            self._seen.add(node_id)
            self._pids[node_id] = pid

    def _elections(self, snapshots: Snapshots) -> Iterator[str]:
        for node_id, snap in sorted(snapshots.items()):
            if snap is None or snap.get("role") != "candidate":
                continue
            term = int(snap.get("term", 0))
            if term > self._election_term:
                self._election_term = term
                yield f"election: term {term} started by {node_id}"

    def _leader_change(self, snapshots: Snapshots) -> Iterator[str]:
        reachable = [s for s in snapshots.values() if s is not None]
        if not reachable:
            return
        current = agreed_leadership(snapshots)
        if current is None and any(s.get("leader") is not None for s in reachable):
            return  # the peers disagree for now; wait for them to settle
        if self._leadership_known and current == self._leadership:
            return
        self._leadership, self._leadership_known = current, True
        if current is None:
            yield "no leader"
        else:
            self._election_term = max(self._election_term, current[1])
            yield f"peer {current[0]} leads, term {current[1]}"


# --- commands: k N, r N, q ----------------------------------------------------------


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


# --- polling --------------------------------------------------------------------------


async def fetch_cluster(session: aiohttp.ClientSession, url: str) -> Snapshot | None:
    try:
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT)
        async with session.get(f"{url}/cluster", timeout=timeout) as resp:
            if resp.status != 200:
                return None
            data = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    return data if isinstance(data, dict) else None


async def poll_cluster(
    session: aiohttp.ClientSession, config: ClusterConfig, launcher: Launcher
) -> dict[int, Snapshot | None]:
    """Every peer's view; None for a peer whose process is not running or did not answer."""
    ids = [n for n in config.ids if launcher.is_running(n)]
    views = await asyncio.gather(*(fetch_cluster(session, config.node(n).url) for n in ids))
    found = dict(zip(ids, views, strict=True))
    return {n: found.get(n) for n in config.ids}


# --- rendering ------------------------------------------------------------------------


def api_url(config: ClusterConfig, snapshots: Snapshots) -> str:
    leadership = agreed_leadership(snapshots)
    if leadership is not None and leadership[0] in config.ids:
        return config.node(leadership[0]).url
    return config.nodes[0].url


def peer_lines(config: ClusterConfig) -> list[str]:
    lines = [f"{len(config.nodes)} peers; state, logs and config in {config.data_dir}"]
    return lines + [f"  peer {n.id}  {n.url}  log {log_path(config, n.id)}" for n in config.nodes]


def usage_lines(url: str) -> list[str]:
    body = '{"kind":"echo","args":{"hello":"world"}}'
    return [
        f"API (any peer; writes go to the leader): {url}",
        "submit a task:",
        f"  curl -s -X POST {url}/tasks -H 'content-type: application/json' -d '{body}'",
        "cluster status:",
        f"  python -m peer status --peer {url}",
    ]


def leader_line(snapshots: Snapshots) -> Text:
    leadership = agreed_leadership(snapshots)
    if leadership is None:
        return Text("leader: none yet (election in progress or no majority)", style="yellow")
    leader, term = leadership
    ready = (snapshots.get(leader) or {}).get("ready")
    state = "ready" if ready else "syncing log" if ready is not None else "unreachable"
    return Text(f"leader: peer {leader}, term {term} ({state})", style="bold green")


def reference_view(snapshots: Snapshots) -> Snapshot | None:
    """The leader's view if reachable, else the reachable view with the highest term."""
    leadership = agreed_leadership(snapshots)
    if leadership is not None and snapshots.get(leadership[0]) is not None:
        return snapshots[leadership[0]]
    views = [s for s in snapshots.values() if s is not None]
    return max(views, key=lambda s: s.get("term", 0), default=None)


def member(view: Snapshot | None, node_id: int) -> Mapping[str, Any]:
    for entry in (view or {}).get("members", []):
        if entry.get("id") == node_id:
            return entry  # type: ignore[no-any-return]
    return {}


def heartbeat_age(last_seen_ms: Any, now: float | None = None) -> int | None:
    """Milliseconds since the last heartbeat; accepts an age or an epoch timestamp in ms."""
    if isinstance(last_seen_ms, bool) or not isinstance(last_seen_ms, int | float):
        return None
    if last_seen_ms > 1e11:  # a wall-clock time, not an age
        return max(0, round((time.time() if now is None else now) * 1000 - last_seen_ms))
    return round(last_seen_ms)


_STYLES = {"alive": "green", "suspect": "yellow", "dead": "red", "down": "red"}
_STYLES |= {"leader": "bold green", "candidate": "yellow", "running": "green"}


def _cell(value: Any) -> Text:
    text = "-" if value is None else str(value)
    return Text(text, style=_STYLES.get(text, "red" if text.startswith(("exit", "kill")) else ""))


def peer_row(
    node_id: int, snap: Snapshot | None, ref: Snapshot | None, launcher: Launcher
) -> list[Any]:
    own = snap or {}
    seen = member(ref, node_id) or member(snap, node_id)
    view = "down" if snap is None else seen.get("status", "up")
    age = heartbeat_age(seen.get("last_seen_ms"))
    address = launcher.config.node(node_id).url.removeprefix("http://")
    row = [node_id, address, own.get("pid", launcher.pid(node_id)), launcher.status(node_id), view]
    row += [own.get("role"), own.get("term"), own.get("leader")]
    row += [None if snap is None or age is None else f"{age} ms"]
    return row + [own.get("last_index"), own.get("commit_index")]


def peer_table(config: ClusterConfig, snapshots: Snapshots, launcher: Launcher) -> Table:
    extras = [c for c in EXTRA_COLUMNS if any(c in (s or {}) for s in snapshots.values())]
    table = Table(expand=False, header_style="bold")
    headers = ["peer", "address", "pid", "process", "view", "role", "term", "leader"]
    for header in [*headers, "heartbeat", "last index", "commit", *extras]:
        table.add_column(header, justify="right" if header in ("peer", "pid", "term") else "left")
    ref = reference_view(snapshots)
    for node_id in config.ids:
        snap = snapshots.get(node_id)
        row = peer_row(node_id, snap, ref, launcher) + [(snap or {}).get(c) for c in extras]
        table.add_row(*(_cell(v) for v in row))
    return table


def totals_line(snapshots: Snapshots) -> Text:
    """Cluster totals per task state, as the leader (or any peer) sees them."""
    counts = (reference_view(snapshots) or {}).get("tasks")
    if not isinstance(counts, dict):
        return Text("")
    parts = [f"{state} {n}" for state, n in counts.items()]
    return Text("tasks: " + " · ".join(parts), style="bold")


def event_lines(feed: EventFeed) -> Text:
    text = Text()
    for event in feed.recent:
        text.append(time.strftime("%H:%M:%S ", time.localtime(event.at)), style="dim")
        text.append(event.text + "\n")
    return text if feed.recent else Text("waiting for peers…", style="dim")


def render(
    config: ClusterConfig, snapshots: Snapshots, launcher: Launcher, feed: EventFeed, pending: str
) -> Group:
    title = f"bullyq: {len(config.nodes)} local peers · state and logs in {config.data_dir}"
    usage = [Text(line) for line in usage_lines(api_url(config, snapshots))]
    footer = Text.assemble(("> ", "bold"), pending, ("▏", "blink"), "   ", (HELP, "dim"))
    return Group(
        Text(title, style="bold cyan"),
        leader_line(snapshots),
        *usage,
        peer_table(config, snapshots, launcher),
        totals_line(snapshots),
        Panel(event_lines(feed), title="events", border_style="dim"),
        footer,
    )


# --- the run: poll, derive, show, obey ------------------------------------------------


class ClusterWatch:
    """One `run_cluster.py` session: polls the peers and applies k/r/q until stopped."""

    def __init__(self, launcher: Launcher, headless: bool, out: TextIO = sys.stdout) -> None:
        self.launcher = launcher
        self.config = launcher.config
        self.headless = headless
        self.out = out
        self.feed = EventFeed(on_event=self._print if headless else None)
        self.snapshots: dict[int, Snapshot | None] = {n: None for n in self.config.ids}
        self.stop = asyncio.Event()
        self._live: Live | None = None
        self._editor: LineEditor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._restarting: set[int] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self.stop.set)
        try:
            with stdin_commands(self.obey, keys=not self.headless) as editor:
                self._editor = editor
                async with aiohttp.ClientSession() as session:
                    with self._screen():
                        await self._loop(session)
        finally:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)

    async def _loop(self, session: aiohttp.ClientSession) -> None:
        while not self.stop.is_set():
            await self.poll_once(session)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), POLL_INTERVAL)

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        for node_id, code in self.launcher.reap():
            path = log_path(self.config, node_id)
            self.feed.note(time.time(), f"peer {node_id} exited with code {code}; see {path}")
        self.snapshots = await poll_cluster(session, self.config, self.launcher)
        self.feed.update(self.snapshots, time.time())
        self._refresh()

    def obey(self, line: str) -> None:
        """Carry out one command line typed by the user."""
        command = parse_command(line)
        if command is None and line.strip():
            self.feed.note(time.time(), f"unknown command {line.strip()!r}; {HELP}")
        elif command is None:
            pass
        elif command.action == "quit":
            self.stop.set()
        elif command.node_id is None or command.node_id not in self.config.ids:
            self.feed.note(time.time(), f"there is no peer {command.node_id}")
        elif command.action == "kill":
            self._kill(command.node_id)
        elif command.node_id in self._restarting:
            self.feed.note(time.time(), f"peer {command.node_id} is already restarting")
        else:
            self._restarting.add(command.node_id)
            task = asyncio.create_task(self._restart(command.node_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._refresh()

    def _kill(self, node_id: int) -> None:
        pid = self.launcher.kill(node_id)
        said = f"killed peer {node_id} (pid {pid})" if pid else f"peer {node_id} is not running"
        self.feed.note(time.time(), said)

    async def _restart(self, node_id: int) -> None:
        self.feed.note(time.time(), f"restarting peer {node_id}")
        try:  # a running peer gets SIGTERM and up to STOP_GRACE seconds: not on the loop
            pid = await asyncio.to_thread(self.launcher.restart, node_id)
        except OSError as exc:
            self.feed.note(time.time(), f"could not start peer {node_id}: {exc}")
        else:
            self.feed.note(time.time(), f"started peer {node_id} again (pid {pid})")
        finally:
            self._restarting.discard(node_id)
        self._refresh()

    def _refresh(self) -> None:
        if self._live is not None:
            pending = self._editor.pending if self._editor else ""
            self._live.update(
                render(self.config, self.snapshots, self.launcher, self.feed, pending), refresh=True
            )

    def _print(self, event: Event) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
        print(f"{stamp} {event.text}", file=self.out, flush=True)

    @contextlib.contextmanager
    def _screen(self) -> Iterator[None]:
        if self.headless:
            for line in peer_lines(self.config) + usage_lines(self.config.nodes[0].url):
                print(line, file=self.out)
            print(f"commands on stdin: {HELP}", file=self.out, flush=True)
            yield
            return
        with Live(console=Console(), auto_refresh=False, transient=False) as live:
            self._live = live
            try:
                yield
            finally:
                self._live = None
