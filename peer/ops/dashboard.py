"""What `run_cluster.py` shows while the peers run: a rich live dashboard, or (headless)
timestamped event lines, fed by polling every peer's `GET /cluster`.

Owns: polling, rendering, and the watch loop that ties them to the event feed
(`peer.ops.events`) and carries out the k/r/q commands read from stdin (`peer.ops.keys`). It
starts and stops processes only through `peer.ops.launcher.PeerProcesses`, and never touches a
peer's state other than by reading its public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

import aiohttp
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from peer.client.asynchronous import TOKEN_ENV
from peer.config import ClusterConfig
from peer.ops import render as render_text
from peer.ops.events import Event, EventFeed, Snapshot, Snapshots, agreed_leadership, reference_view
from peer.ops.keys import HELP, LineEditor, parse_command, stdin_commands
from peer.ops.launcher import STOP_SIGNALS, PeerProcesses, log_path

POLL_INTERVAL = 0.25  # seconds between polls of every peer
POLL_TIMEOUT = 0.5  # seconds before a peer counts as down for this poll
EXTRA_COLUMNS = ("queue_depth", "running", "done")


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
    session: aiohttp.ClientSession, config: ClusterConfig, launcher: PeerProcesses
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


def usage_lines(url: str, token: str | None = None, auth: bool = False) -> list[str]:
    """What a newcomer copies: the token (when this launch made one), a submit and a
    status command, the web page."""
    body = '{"kind":"echo","args":{"hello":"world"}}'
    lines = [f"API (any peer; writes go to the leader): {url}   web page: {url}/"]
    header = ""
    if token is not None:
        lines += ["API token of this launch (admin; the web page asks for it):"]
        lines += [f"  export {TOKEN_ENV}={token}"]
    if token is not None or auth:
        header = f' -H "Authorization: Bearer ${TOKEN_ENV}"'
    if auth and token is None:
        lines += [f"API tokens are configured: export {TOKEN_ENV}=<yours>"]
    return lines + [
        "submit a task:",
        f"  curl -s -X POST {url}/tasks{header} -H 'content-type: application/json' -d '{body}'",
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
_STYLES |= {"alive (drained)": "cyan", "suspect (drained)": "yellow"}
_STYLES |= {"leader": "bold green", "candidate": "yellow", "running": "green"}


def _cell(value: Any) -> Text:
    text = "-" if value is None else str(value)
    return Text(text, style=_STYLES.get(text, "red" if text.startswith(("exit", "kill")) else ""))


def peer_row(
    node_id: int, snap: Snapshot | None, ref: Snapshot | None, launcher: PeerProcesses
) -> list[Any]:
    own = snap or {}
    seen = member(ref, node_id) or member(snap, node_id)
    view = "down" if snap is None else seen.get("status", "up")
    if seen.get("drained"):
        view = f"{view} (drained)"
    age = heartbeat_age(seen.get("last_seen_ms"))
    address = launcher.config.node(node_id).url.split("://", 1)[-1]
    row = [node_id, address, own.get("pid", launcher.pid(node_id)), launcher.status(node_id), view]
    row += [own.get("role"), own.get("term"), own.get("leader")]
    row += [None if snap is None or age is None else f"{age} ms"]
    return row + [own.get("last_index"), own.get("commit_index")]


def peer_table(config: ClusterConfig, snapshots: Snapshots, launcher: PeerProcesses) -> Table:
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


def queue_table(snapshots: Snapshots) -> Table | None:
    """Per queue: tasks waiting (queued, scheduled) and running, as the leader sees it."""
    queues = (reference_view(snapshots) or {}).get("queues")
    if not isinstance(queues, dict) or not queues:
        return None
    table = Table(title="queues", title_justify="left", box=None)
    for column in ("queue", "queued", "scheduled", "running"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for name, counts in queues.items():
        table.add_row(name, *(str(counts.get(c, 0)) for c in ("queued", "scheduled", "running")))
    return table


def schedule_table(snapshots: Snapshots) -> Table | None:
    """Per schedule: its rhythm, the next tick due, the last one fired, ticks fired."""
    schedules = (reference_view(snapshots) or {}).get("schedules")
    if not isinstance(schedules, list) or not schedules:
        return None
    table = Table(title="schedules", title_justify="left", box=None)
    for column in ("name", "when", "next due", "last fired", "runs"):
        table.add_column(column, justify="right" if column == "runs" else "left")
    for item in schedules:
        name = str(item.get("name")) + (" (paused)" if item.get("paused") else "")
        table.add_row(
            name,
            render_text.rhythm(item),
            render_text.clock(item.get("next_due")),
            render_text.clock(item.get("last_due")),
            str(item.get("fired", 0)),
        )
    return table


def event_lines(feed: EventFeed) -> Text:
    text = Text()
    for event in feed.recent:
        text.append(time.strftime("%H:%M:%S ", time.localtime(event.at)), style="dim")
        text.append(event.text + "\n")
    return text if feed.recent else Text("waiting for peers…", style="dim")


def render(
    config: ClusterConfig,
    snapshots: Snapshots,
    launcher: PeerProcesses,
    feed: EventFeed,
    pending: str,
    token: str | None = None,
) -> Group:
    title = f"bullyq: {len(config.nodes)} local peers · state and logs in {config.data_dir}"
    lines = usage_lines(api_url(config, snapshots), token, config.auth.enabled)
    usage = [Text(line) for line in lines]
    footer = Text.assemble(("> ", "bold"), pending, ("▏", "blink"), "   ", (HELP, "dim"))
    return Group(
        Text(title, style="bold cyan"),
        leader_line(snapshots),
        *usage,
        peer_table(config, snapshots, launcher),
        totals_line(snapshots),
        *(t for t in (queue_table(snapshots), schedule_table(snapshots)) if t is not None),
        Panel(event_lines(feed), title="events", border_style="dim"),
        footer,
    )


# --- the run: poll, derive, show, obey ------------------------------------------------


class ClusterWatch:
    """One `run_cluster.py` session: polls the peers and applies k/r/q until stopped."""

    def __init__(
        self,
        launcher: PeerProcesses,
        headless: bool,
        out: TextIO = sys.stdout,
        token: str | None = None,
        shown_token: str | None = None,
    ) -> None:
        """`token`: what the dashboard polls with; `shown_token`: the one it prints (a
        token this launch made, never the user's own)."""
        self.launcher = launcher
        self.token = token
        self.shown_token = shown_token
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
                auth = {"Authorization": f"Bearer {self.token}"} if self.token else {}
                tls = self.config.tls
                connector = aiohttp.TCPConnector(ssl=tls.client_context() if tls else True)
                async with aiohttp.ClientSession(headers=auth, connector=connector) as session:
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
        try:
            pid = self.launcher.kill(node_id)
        except OSError as exc:
            self.feed.note(time.time(), f"cannot kill peer {node_id}: {exc}")
            return
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
                render(
                    self.config, self.snapshots, self.launcher, self.feed, pending, self.shown_token
                ),
                refresh=True,
            )

    def _print(self, event: Event) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(event.at))
        print(f"{stamp} {event.text}", file=self.out, flush=True)

    @contextlib.contextmanager
    def _screen(self) -> Iterator[None]:
        if self.headless:
            url, auth = self.config.nodes[0].url, self.config.auth.enabled
            for line in peer_lines(self.config) + usage_lines(url, self.shown_token, auth):
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
