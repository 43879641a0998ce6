"""Ring 3 harness: a real cluster of peer processes on loopback, read through the public API.

Owns the OS processes it starts and a few synchronous HTTP helpers; it knows nothing of
the peer's internals. `Cluster` finds free ports, writes `<data_dir>/cluster.toml` with a
random secret, starts `python -m peer serve` per node (log in `<data_dir>/node-N.log`, own
session), kills (SIGKILL), restarts and stops them (SIGTERM, then SIGKILL), and reads
`GET /cluster` with short timeouts. `wait_for` polls a condition under a hard bound and
fails with every peer's last view and log tail. Used by `tests/conftest.py`
(`cluster_factory`) and by `bench/failover.py`; synchronous, so no event loop is needed.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, TypeVar

from peer.config import ClusterConfig, NodeAddress, dump_config, load_config

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
HTTP_TIMEOUT = 0.5  # seconds per request: a peer that is slower than this counts as down
POLL_INTERVAL = 0.02
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL = 12  # lines of each peer's log shown when a wait times out

T = TypeVar("T")
View = dict[str, Any]


def free_ports(count: int, host: str = HOST) -> list[int]:
    """`count` distinct ports the kernel reports free: bind all to port 0, then close."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def base_config() -> ClusterConfig:
    """The project's `cluster.toml` (its timings are the defaults), else the built-ins."""
    path = PROJECT_ROOT / "cluster.toml"
    if path.exists():
        return load_config(path)
    return ClusterConfig(nodes=(NodeAddress(1, HOST, 7001),))


def cluster_config(
    size: int, data_dir: Path, overrides: dict[str, Any] | None = None
) -> ClusterConfig:
    """Nodes 1..size on free loopback ports, `data_dir`, a random secret, then `overrides`
    (with `tls`, the nodes serve https)."""
    scheme = "https" if (overrides or {}).get("tls") is not None else "http"
    ports = free_ports(size)
    nodes = tuple(NodeAddress(i + 1, HOST, port, scheme) for i, port in enumerate(ports))
    config = replace(
        base_config(), nodes=nodes, data_dir=str(data_dir), secret=secrets.token_hex(16)
    )
    return replace(config, **(overrides or {}))


class _Peer:
    """One started peer process and its log file."""

    def __init__(self, popen: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        self.popen = popen
        self.log = log
        self.ended_by_us = False

    def running(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.popen.pid, sig)  # own session: pid is the group id
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)


class Cluster:
    """N peer processes of one config. Ids are 1..N; nothing starts until `start_all`."""

    def __init__(
        self,
        size: int,
        data_dir: Path | str,
        overrides: dict[str, Any] | None = None,
        log_level: str = "INFO",
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config = cluster_config(size, self.data_dir, overrides)
        self.config_path = self.data_dir / "cluster.toml"
        self.config_path.write_text(dump_config(self.config), encoding="utf-8")
        self.config_path.chmod(0o600)
        self.log_level = log_level
        self.token: str | None = None  # sent with every request when the cluster has auth
        self.prefix: dict[int, list[str]] = {}  # a peer's command prefix (ip netns exec NS)
        self.joining: dict[int, Path] = {}  # peers added later: their own cluster file
        self._peers: dict[int, _Peer] = {}
        self._conns: dict[int, http.client.HTTPConnection] = {}
        self.last_views: dict[int, View | None] = {}
        atexit.register(self.stop_all)

    # ------------------------------------------------------------------ processes

    @property
    def ids(self) -> tuple[int, ...]:
        return self.config.ids

    @property
    def secret(self) -> bytes:
        return self.config.secret.encode()

    def url(self, n: int) -> str:
        return self.config.node(n).url

    def log_path(self, n: int) -> Path:
        return self.data_dir / f"node-{n}.log"

    def start(self, n: int) -> int:
        """Start peer `n` (its log is appended to); returns its pid."""
        if self.running(n):
            raise RuntimeError(f"peer {n} is already running")
        log = open(self.log_path(n), "ab")  # noqa: SIM115 - closed when the peer is reaped
        log.write(f"\n=== harness: start peer {n} at {time.strftime('%H:%M:%S')} ===\n".encode())
        log.flush()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        )
        cmd = [*self.prefix.get(n, []), sys.executable, "-m", "peer", "serve"]
        cmd += ["--config", str(self.joining.get(n, self.config_path))]
        if n in self.joining:
            cmd.append("--join")
        popen = subprocess.Popen(
            [*cmd, "--id", str(n), "--log-level", self.log_level],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            env=env,
            start_new_session=True,
        )
        self._peers[n] = _Peer(popen, log)
        return popen.pid

    def add_node(self) -> int:
        """A new peer (the next id, a free port) with its own cluster file listing it
        too, which starts with `--join`; the others' file is left as it was, as on a
        real cluster. Returns its id (not started)."""
        n = max(self.ids) + 1
        [port] = free_ports(1)
        first = self.config.nodes[0]
        self.config = replace(
            self.config, nodes=(*self.config.nodes, NodeAddress(n, HOST, port, first.scheme))
        )
        path = self.data_dir / f"cluster-{n}.toml"
        path.write_text(dump_config(self.config), encoding="utf-8")
        path.chmod(0o600)
        self.joining[n] = path
        return n

    def start_all(self) -> None:
        for n in self.ids:
            self.start(n)

    def running(self, n: int) -> bool:
        peer = self._peers.get(n)
        return peer is not None and peer.running()

    def running_ids(self) -> list[int]:
        return [n for n in self.ids if self.running(n)]

    def crashed(self) -> dict[int, int]:
        """Peers that exited without being killed or stopped here: id -> exit code."""
        return {
            n: code
            for n, peer in self._peers.items()
            if not peer.ended_by_us and (code := peer.popen.poll()) is not None
        }

    def pid(self, n: int) -> int | None:
        peer = self._peers.get(n)
        return None if peer is None else peer.popen.pid

    def kill(self, n: int) -> None:
        """SIGKILL peer `n` (a crash) and reap it."""
        peer = self._peers[n]
        peer.ended_by_us = True
        peer.signal(signal.SIGKILL)
        peer.popen.wait()
        self._forget(n)

    def stop(self, n: int, grace: float = STOP_GRACE) -> None:
        self._stop([n], grace)

    def restart(self, n: int) -> int:
        """Stop peer `n` if it still runs (SIGTERM), then start it again; returns the pid."""
        if self.running(n):
            self.stop(n)
        return self.start(n)

    def stop_all(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every running peer, SIGKILL those still alive after `grace` seconds."""
        self._stop(list(self._peers), grace)
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def _stop(self, ids: list[int], grace: float) -> None:
        running = [n for n in ids if self.running(n)]
        for n in running:
            self._peers[n].ended_by_us = True
            self._peers[n].signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for n in running:
            popen = self._peers[n].popen
            try:
                popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._peers[n].signal(signal.SIGKILL)
                popen.wait()
        for n in ids:
            self._forget(n)

    def _forget(self, n: int) -> None:
        peer = self._peers.get(n)
        if peer is not None:
            peer.popen.wait()
            peer.log.close()
        conn = self._conns.pop(n, None)
        if conn is not None:
            conn.close()

    # ----------------------------------------------------------------------- HTTP

    def request(
        self,
        n: int,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> tuple[int, bytes] | None:
        """One request to peer `n` over a kept-alive connection; None if unreachable.

        Sent again once, on a new connection, only when a reused connection turns out to
        be closed (the peer restarted or dropped it); never after a timeout.
        """
        for _ in range(2):
            conn = self._conns.get(n)
            reused = conn is not None
            if conn is None:
                node, tls = self.config.node(n), self.config.tls
                if tls is None:
                    conn = http.client.HTTPConnection(node.host, node.port)
                else:
                    context = tls.client_context()
                    conn = http.client.HTTPSConnection(node.host, node.port, context=context)
                self._conns[n] = conn
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            sent = dict(headers or {})
            if self.token is not None:
                sent.setdefault("Authorization", f"Bearer {self.token}")
            try:
                conn.request(method, path, body=body, headers=sent)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                del self._conns[n]
                if not reused or isinstance(exc, TimeoutError):
                    return None
        return None

    def view(self, n: int) -> View | None:
        """Peer `n`'s `GET /cluster`, or None if it does not answer 200 with JSON."""
        answer = self.request(n, "GET", "/cluster") if self.running(n) else None
        view = None
        if answer is not None and answer[0] == 200:
            with contextlib.suppress(ValueError):
                view = json.loads(answer[1])
        self.last_views[n] = view
        return view

    def views(self, ids: Iterable[int] | None = None) -> dict[int, View | None]:
        return {n: self.view(n) for n in (self.ids if ids is None else ids)}

    def ready_status(self, n: int) -> int | None:
        """The status of `GET /health?ready=1` on peer `n` (None if unreachable)."""
        answer = self.request(n, "GET", "/health?ready=1")
        return None if answer is None else answer[0]

    def agreed_leader(self, ids: Iterable[int] | None = None) -> int | None:
        """The leader every given running peer names, if it says it leads and is ready.

        `ids` defaults to every running peer; given ids that are not running are skipped.
        None when any of them is unreachable, names no leader or a different one.
        """
        live = [n for n in (self.running_ids() if ids is None else ids) if self.running(n)]
        if not live:
            return None
        leaders = set()
        views: dict[int, View | None] = {}
        for n in live:
            views[n] = view = self.view(n)
            if view is None or view.get("leader") is None:
                return None
            leaders.add(view["leader"])
        if len(leaders) != 1:
            return None
        leader = leaders.pop()
        if leader not in self.ids or not self.running(leader):
            return None
        own = views[leader] if leader in views else self.view(leader)
        if own is None or own.get("role") != "leader" or own.get("leader") != leader:
            return None
        return leader if own.get("ready") else None

    # ---------------------------------------------------------------------- waits

    def wait_for(
        self,
        predicate: Callable[[], T],
        timeout: float,
        what: str = "condition",
        interval: float = POLL_INTERVAL,
    ) -> T:
        """Poll `predicate` until it returns something truthy, and return that.

        Raises AssertionError after `timeout` seconds, or as soon as a peer exits that was
        not killed or stopped here, with every peer's last view and the tail of its log.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            crashed = self.crashed()
            if crashed:
                raise AssertionError(
                    f"peers exited on their own (id: code) {crashed} while waiting for {what}\n"
                    + self.describe()
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:.1f}s waiting for {what}\n" + (self.describe())
                )
            time.sleep(interval)

    def wait_for_leader(
        self, expected: int | None = None, ids: Iterable[int] | None = None, timeout: float = 10.0
    ) -> int:
        """Wait until the given running peers agree on a ready leader (`expected` if given)."""
        chosen = None if ids is None else tuple(ids)

        def agreed() -> int | None:
            leader = self.agreed_leader(chosen)
            return leader if expected is None or leader == expected else None

        want = "any leader" if expected is None else f"leader {expected}"
        return self.wait_for(agreed, timeout, f"{want} agreed by {chosen or 'all running'}")

    def describe(self) -> str:
        """Every peer's process state, last view and log tail (for failure messages)."""
        lines = []
        for n in self.ids:
            state = "running" if self.running(n) else "not running"
            view = self.view(n) if self.running(n) else self.last_views.get(n)
            lines.append(f"--- peer {n} ({state}, pid {self.pid(n)}): {_brief(view)}")
            lines += [f"    {line}" for line in self._log_tail(n)]
        return "\n".join(lines)

    def _log_tail(self, n: int) -> list[str]:
        try:
            text = self.log_path(n).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        return text.splitlines()[-LOG_TAIL:]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _brief(view: View | None) -> str:
    if view is None:
        return "no view"
    members = " ".join(
        f"{m['id']}:{m['status']}/{m.get('role')}/t{m.get('term')}" for m in view["members"]
    )
    return (
        f"role={view['role']} term={view['term']} leader={view['leader']} "
        f"ready={view.get('ready')} members=[{members}]"
    )
