"""Runs one peer: the driver and its HTTP server, until SIGINT or SIGTERM, on uvloop
where it is installed (its event loop costs a fraction of asyncio's per wake-up, which
is most of what an idle peer spends) and on asyncio's own loop elsewhere.

The HTTP server listens through a `ConnectionGuard`, which holds the limits aiohttp has
no setting for:

- open connections per client address (`max_connections_per_client` in cluster.toml,
  64): one more is answered 429 `too_many_connections` and closed, without reaching
  the app (peers on one host share 127.0.0.1: a big one-host cluster raises it);
- a request head (request line and headers) must be complete `header_timeout` seconds
  (5) after its first byte arrived, or the connection is closed: a client trickling its
  headers (slow-loris) holds one connection for that long, never a peer;
- a kept-alive connection that sends nothing is closed after `IDLE_TIMEOUT` seconds
  (aiohttp's `keepalive_timeout`, which also starts when a connection opens).

The guard wraps aiohttp's protocol factory (`web.Server`, itself made to be handed to
`loop.create_server`): each connection is aiohttp's own `RequestHandler` behind a thin
`GuardedConnection` that counts it, times its heads and forwards every call. A
middleware tells the connection when a request is being handled (no head to time).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

import orjson
from aiohttp import web

from peer.config import ClusterConfig
from peer.registry import Registry
from peer.runtime.api import build_app
from peer.runtime.logs import PeerContext
from peer.runtime.memory import tune_collector
from peer.runtime.node import Node

log = logging.getLogger(__name__)

MAX_CONNECTIONS_PER_CLIENT = 64  # open connections one remote address may hold
MAX_CONNECTIONS = 1000  # open connections in all (under a process's usual 1024 files)
HEADER_TIMEOUT = 5.0  # seconds from a request head's first byte to its end
IDLE_TIMEOUT = 75.0  # seconds a kept-alive connection may send nothing
REFUSAL_LINGER = 1.0  # seconds a refused connection waits for its client to hang up

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    per_client: int = MAX_CONNECTIONS_PER_CLIENT
    header_timeout: float = HEADER_TIMEOUT  # (also the TLS handshake's)
    idle_timeout: float = IDLE_TIMEOUT
    total: int = MAX_CONNECTIONS


def client_address(transport: asyncio.BaseTransport) -> str:
    """The remote host of a connection ("" where there is none, e.g. a Unix socket)."""
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def refusal(client: str, limit: int) -> bytes:
    """A whole HTTP response: 429, the error body, `Retry-After`, `Connection: close`."""
    message = f"more than {limit} open connections from {client}; close some and retry"
    body = orjson.dumps({"error": {"code": "too_many_connections", "message": message}})
    head = (
        "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedConnection(asyncio.Protocol):
    """One connection: admitted (then aiohttp's handler does the HTTP) or refused."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.admitted = False
        self.handling = 0  # requests of this connection being handled now
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports do not derive from asyncio's, but have the same methods)
        self.transport = transport = cast(asyncio.Transport, transport)
        self.client = client_address(transport)
        self.admitted = self.guard.admit(self)
        if self.admitted:
            self.inner.connection_made(transport)
            return
        transport.write(refusal(self.client, self.guard.limits.per_client))
        if not transport.can_write_eof():
            transport.close()
            return
        # half-closed: the client reads the answer whole, even if it was still sending
        # (closing at once, with its request unread, would reset the connection)
        transport.write_eof()
        self._linger = asyncio.get_running_loop().call_later(REFUSAL_LINGER, transport.close)

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return  # a refused connection's request is read and dropped
        if not self.handling and self._head_timer is None:
            loop = asyncio.get_running_loop()
            timeout = self.guard.limits.header_timeout
            self._head_timer = loop.call_later(timeout, self._head_timed_out)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.admitted else None

    def pause_writing(self) -> None:
        if self.admitted:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.admitted:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._linger is not None:
            self._linger.cancel()
        if self.admitted:
            self.admitted = False
            self.guard.release(self)
            self.inner.connection_lost(exc)

    def request_started(self) -> None:
        self.handling += 1
        self._cancel_head_timer()

    def request_ended(self) -> None:
        self.handling -= 1

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.handling or self.transport is None:
            return
        log.info(
            "closing a connection from %s: no whole request head within %gs",
            self.client,
            self.guard.limits.header_timeout,
        )
        self.transport.close()


class ConnectionGuard:
    """Admits connections within the per-client limit and tracks the admitted ones."""

    def __init__(self, limits: ConnectionLimits = ConnectionLimits()) -> None:
        self.limits = limits
        self.open: Counter[str] = Counter()  # admitted connections per client address
        self._live: dict[asyncio.BaseTransport, GuardedConnection] = {}

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], GuardedConnection]:
        """A protocol factory for `loop.create_server`: `inner`'s protocols, guarded."""
        return lambda: GuardedConnection(self, inner())

    def admit(self, connection: GuardedConnection) -> bool:
        if self.open[connection.client] >= self.limits.per_client:
            log.info("refused a connection from %s: too many open", connection.client)
            return False
        if len(self._live) >= self.limits.total:
            log.warning(
                "refused a connection from %s: %d open in all", connection.client, len(self._live)
            )
            return False
        self.open[connection.client] += 1
        assert connection.transport is not None
        self._live[connection.transport] = connection
        return True

    def release(self, connection: GuardedConnection) -> None:
        self.open[connection.client] -= 1
        if self.open[connection.client] <= 0:
            del self.open[connection.client]
        if connection.transport is not None:
            self._live.pop(connection.transport, None)

    @web.middleware
    async def track_requests(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Outermost: while a request is handled its connection has no head to time."""
        transport = request.transport
        connection = self._live.get(transport) if transport is not None else None
        if connection is None:
            return await handler(request)
        connection.request_started()
        try:
            return await handler(request)
        finally:
            connection.request_ended()


class HttpServer:
    """A peer's app served through a `ConnectionGuard` on one address."""

    def __init__(self, app: web.Application, limits: ConnectionLimits = ConnectionLimits()):
        self.guard = ConnectionGuard(limits)
        app.middlewares.insert(0, self.guard.track_requests)
        self.runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=limits.idle_timeout
        )
        self.listener: asyncio.Server | None = None

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext | None = None) -> int:
        """Listen on `host:port` (0: any free port); returns the port."""
        await self.runner.setup()
        assert self.runner.server is not None
        loop = asyncio.get_running_loop()
        factory = self.guard.factory(self.runner.server)
        self.listener = await loop.create_server(
            factory,
            host,
            port,
            ssl=ssl_context,
            ssl_handshake_timeout=self.guard.limits.header_timeout if ssl_context else None,
            reuse_address=True,
        )
        return int(self.listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()  # accept nothing more; the runner closes what is open
        await self.runner.cleanup()


def run(
    config: ClusterConfig, node_id: int, logs: PeerContext | None = None, join: bool = False
) -> None:
    try:
        import uvloop
    except ImportError:  # not on this platform: the standard loop works the same
        asyncio.run(serve(config, node_id, logs, join))
    else:
        uvloop.run(serve(config, node_id, logs, join))


async def serve(
    config: ClusterConfig, node_id: int, logs: PeerContext | None = None, join: bool = False
) -> None:
    registry = Registry(config.task_modules, config.allow_shell)
    node = Node(config, node_id, registry, join)
    tune_collector()  # (its state loaded)
    if logs is not None:
        logs.term = lambda: node.core.term
    limits = ConnectionLimits(config.max_connections_per_client, config.header_timeout)
    http = HttpServer(build_app(node, registry), limits)
    context = config.tls.server_context(node_id) if config.tls is not None else None
    await http.start(node.address.host, node.address.port, context)
    await node.start()
    log.info("peer %s serving on %s (incarnation %s)", node_id, node.address.url, node.incarnation)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("peer %s stopping", node_id)
    await node.stop()
    await http.stop()
