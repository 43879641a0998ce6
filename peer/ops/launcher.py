"""Peer processes on this machine: the effective config they share, starting, killing,
restarting and stopping them.

Owns the OS processes that `run_cluster.py` starts and nothing else: it never talks to a
peer over the network and never draws on the terminal (that is `peer/dashboard.py`).
Every peer runs in its own session (so the terminal's Ctrl-C reaches only us) and is
stopped by us: SIGTERM to its process group, SIGKILL after a grace period, also at exit.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Protocol

from peer.config import ClusterConfig, ConfigError, NodeAddress, dump_config, with_nodes
from peer.tokens import new_token

PRIVATE_ENV = ("BULLYQ_TOKEN",)  # the user's API token is none of a peer's business
STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each stops the whole cluster
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding peer/


def new_secret() -> str:
    return secrets.token_hex(16)


def effective_config(
    config: ClusterConfig,
    nodes: int,
    base_port: int | None = None,
    data_dir: str | None = None,
    make_secret: Callable[[], str] = new_secret,
) -> ClusterConfig:
    """The config of this launch: nodes 1..`nodes`, data_dir made absolute, a secret set."""
    if nodes < 1:
        raise ConfigError("--nodes: must be at least 1")
    if base_port is not None and not (base_port > 0 and base_port + nodes - 1 < 65536):
        raise ConfigError(f"--base-port: ports {base_port}..{base_port + nodes - 1} are invalid")
    out = with_nodes(config, nodes, base_port)
    top = max(n.port for n in out.nodes)
    if top >= 65536:
        raise ConfigError(f"node: port {top} is out of range; pass --base-port")
    directory = Path(data_dir if data_dir is not None else out.data_dir).resolve()
    out = replace(out, data_dir=str(directory))
    if not out.secret:
        out = replace(out, secret=make_secret())
    return out


LAUNCH_TOKEN_NAME = "run_cluster"


def launch_token(
    config: ClusterConfig, make_token: Callable[[], str] = new_token
) -> tuple[ClusterConfig, str | None]:
    """With no API tokens configured, a fresh admin token for this launch: the config
    holding its digest, and the token itself (shown once, never written down). With
    tokens configured, the config unchanged and None: the user holds theirs."""
    if config.auth.enabled:
        return config, None
    token = make_token()
    auth = config.auth.with_token(LAUNCH_TOKEN_NAME, "admin", token)
    return replace(config, auth=auth), token


def write_config(config: ClusterConfig) -> Path:
    """Write `config` to `<data_dir>/cluster.toml` (owner-only: it holds the secret)."""
    path = Path(config.data_dir) / "cluster.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(dump_config(config))
    return path


def peer_command(config_path: Path, node_id: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "peer",
        "serve",
        "--config",
        str(config_path),
        "--id",
        str(node_id),
    ]


def log_path(config: ClusterConfig, node_id: int) -> Path:
    return Path(config.data_dir) / f"node-{node_id}.log"


def peer_env(base: dict[str, str]) -> dict[str, str]:
    """`base` with this project importable (so `-m peer` works from any directory)."""
    env = {k: v for k, v in base.items() if k not in PRIVATE_ENV}  # peers and their tasks
    paths = [str(PROJECT_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def busy_ports(config: ClusterConfig) -> list[NodeAddress]:
    """The nodes whose address something else is already listening on."""
    return [node for node in config.nodes if not _can_bind(node)]


def _can_bind(node: NodeAddress) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((node.host, node.port))
        except OSError as exc:
            return exc.errno != errno.EADDRINUSE
    return True


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "running"
    if returncode < 0:
        return "killed"
    return f"exited({returncode})"


@dataclass(slots=True)
class PeerProcess:
    """One started peer: its process, its log file, and whether we asked it to end."""

    node_id: int
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    ended_by_us: bool = False
    reported: bool = False


class PeerProcesses(Protocol):
    """What the dashboard needs of the peers it shows: `Launcher` (run_cluster.py) or
    `peer.ops.remote.RemotePeers` (`peer watch`)."""

    config: ClusterConfig

    def kill(self, node_id: int) -> int | None: ...
    def restart(self, node_id: int) -> int: ...
    def pid(self, node_id: int) -> int | None: ...
    def is_running(self, node_id: int) -> bool: ...
    def status(self, node_id: int) -> str: ...
    def reap(self) -> list[tuple[int, int]]: ...


class Launcher:
    """Starts and stops the peers of one `ClusterConfig`; stops them all at exit."""

    def __init__(self, config: ClusterConfig, config_path: Path) -> None:
        self.config = config
        self.config_path = config_path
        self._peers: dict[int, PeerProcess] = {}
        atexit.register(self.stop_all)

    def start_all(self) -> None:
        for node_id in self.config.ids:
            self.start(node_id)

    def start(self, node_id: int) -> int:
        """Start peer `node_id` (appending to its log); return its pid."""
        self.config.node(node_id)  # raises ConfigError for an unknown id
        path = log_path(self.config, node_id)
        log = open(path, "ab")  # noqa: SIM115 - closed when the peer is reaped or stopped
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n=== run_cluster: starting peer {node_id} at {stamp} ===\n".encode())
        log.flush()
        popen = subprocess.Popen(
            peer_command(self.config_path, node_id),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=peer_env(dict(os.environ)),
            start_new_session=True,
        )
        self._peers[node_id] = PeerProcess(node_id, popen, log)
        return popen.pid

    def kill(self, node_id: int) -> int | None:
        """SIGKILL peer `node_id` (a crash); return its pid, or None if it was not running."""
        peer = self._peers.get(node_id)
        if peer is None or peer.popen.poll() is not None:
            return None
        peer.ended_by_us = True
        _signal_group(peer.popen, signal.SIGKILL)
        peer.popen.wait()
        peer.log.close()
        return peer.popen.pid

    def restart(self, node_id: int) -> int:
        """Stop peer `node_id` if it runs, then start it again with the same command."""
        peer = self._peers.get(node_id)
        if peer is not None:
            _stop([peer], STOP_GRACE)
        return self.start(node_id)

    def stop_all(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every peer still running, SIGKILL those alive after `grace` seconds."""
        _stop(list(self._peers.values()), grace)

    def pid(self, node_id: int) -> int | None:
        peer = self._peers.get(node_id)
        return None if peer is None else peer.popen.pid

    def is_running(self, node_id: int) -> bool:
        peer = self._peers.get(node_id)
        return peer is not None and peer.popen.poll() is None

    def status(self, node_id: int) -> str:
        peer = self._peers.get(node_id)
        return "not started" if peer is None else describe_exit(peer.popen.poll())

    def reap(self) -> list[tuple[int, int]]:
        """Peers that ended on their own since the last call, as (id, return code)."""
        ended = []
        for peer in self._peers.values():
            code = peer.popen.poll()
            if code is None or peer.reported:
                continue
            peer.reported = True
            peer.log.close()
            if not peer.ended_by_us:
                ended.append((peer.node_id, code))
        return ended


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the peer's process group (the peer and what it spawned); ignore the gone."""
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            popen.send_signal(sig)


def _stop(peers: list[PeerProcess], grace: float) -> None:
    running = [p for p in peers if p.popen.poll() is None]
    for peer in running:
        peer.ended_by_us = True
        _signal_group(peer.popen, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for peer in running:
        try:
            peer.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(peer.popen, signal.SIGKILL)
            peer.popen.wait()
    for peer in peers:
        peer.log.close()
