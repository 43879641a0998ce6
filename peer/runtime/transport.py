"""Sending peer messages: one WebSocket stream per peer, batched, each frame signed.

Each destination has one sender task and one stream (`GET /peer/stream`, opened with
signed headers); whatever the driver queues while a frame is being written goes out
together in the next frame. A message sent to several peers in one cycle (the leader's
gossip) is encoded once. Every frame carries its own HMAC and timestamp, so the
receiver checks each one as it would a request. A peer that cannot be reached costs
dropped frames, never a blocked driver: the protocol resends what matters (heartbeats,
probes, claims, appends) on its own timers; after a failed connect the outbox waits a
moment before trying again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections import deque

import aiohttp

from peer.protocol.messages import PeerMessage
from peer.runtime.auth import ReplayGuard, Signer
from peer.runtime.wire import encode_message, join_encoded

log = logging.getLogger(__name__)

MAX_BATCH = 512
MAX_QUEUED = 20_000
MAX_FRAME = 64 << 20
PATH = "/peer/messages"  # one signed batch per request (kept for tools and tests)
STREAM_PATH = "/peer/stream"
RECONNECT_AFTER = 0.1  # seconds to wait after a failed connect


class PeerOutbox:
    """The queue, stream and sender task for one destination peer."""

    def __init__(self, session: aiohttp.ClientSession, url: str, to: int, signer: Signer):
        self.session = session
        self.url = url + STREAM_PATH
        self.to = to
        self.signer = signer
        self.queue: deque[bytes] = deque(maxlen=MAX_QUEUED)  # encoded messages
        self.wake = asyncio.Event()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._retry_at = 0.0
        self.task = asyncio.create_task(self._run(), name=f"outbox->{url}")

    def put(self, encoded: bytes) -> None:
        self.queue.append(encoded)
        self.wake.set()

    async def _run(self) -> None:
        while True:
            await self.wake.wait()  # the driver queues a whole cycle's messages at once
            self.wake.clear()
            while self.queue:
                count = min(len(self.queue), MAX_BATCH)
                batch = [self.queue.popleft() for _ in range(count)]
                await self._send(batch)

    async def _send(self, batch: list[bytes]) -> None:
        ws = self.ws if self.ws is not None and not self.ws.closed else await self._connect()
        if ws is None:
            return  # unreachable: dropped; the protocol's timers resend what matters
        frame = self.signer.frame(self.to, time.time(), join_encoded(batch))
        try:
            await ws.send_bytes(frame)
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            self.ws = None

    async def _connect(self) -> aiohttp.ClientWebSocketResponse | None:
        if time.monotonic() < self._retry_at:
            return None
        headers = self.signer.headers(self.to, "open", time.time(), b"")
        try:
            self.ws = await self.session.ws_connect(
                self.url, headers=headers, max_msg_size=MAX_FRAME, autoping=True
            )
        except (TimeoutError, aiohttp.ClientError, OSError):
            self._retry_at = time.monotonic() + RECONNECT_AFTER
            self.ws = None
        return self.ws

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        if self.ws is not None:
            await self.ws.close()


class Transport:
    """All outboxes of one peer, its signer and the guard against replays sent to it."""

    def __init__(
        self,
        node_id: int,
        urls: dict[int, str],
        secret: bytes,
        ssl_context: ssl.SSLContext | None = None,
        incarnation: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.ssl_context = ssl_context  # for https:// peers: the CA, and our certificate
        self.urls = urls
        self.secret = secret
        start = time.time_ns() // 1000 if incarnation is None else incarnation << 32
        self.signer = Signer(secret, node_id, start)
        self.guard = ReplayGuard(since=time.time())
        self.session: aiohttp.ClientSession | None = None
        self.outboxes: dict[int, PeerOutbox] = {}
        self._closing: set[asyncio.Task[None]] = set()  # outboxes of peers no longer named

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=1.0, connect=0.3)
        connector = aiohttp.TCPConnector(ssl=self.ssl_context or True)
        self.session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        for peer, url in self.urls.items():
            if peer != self.node_id:
                self.outboxes[peer] = PeerOutbox(self.session, url, peer, self.signer)

    def set_urls(self, urls: dict[int, str]) -> None:
        """The peers to reach changed (the membership configuration): an outbox for
        each new one or new url, and those no longer named are closed."""
        self.urls = dict(urls)
        for peer, outbox in list(self.outboxes.items()):
            if urls.get(peer) is None or outbox.url != urls[peer] + STREAM_PATH:
                del self.outboxes[peer]
                closing = asyncio.create_task(outbox.close())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        if self.session is None:
            return
        for peer, url in urls.items():
            if peer != self.node_id and peer not in self.outboxes:
                self.outboxes[peer] = PeerOutbox(self.session, url, peer, self.signer)

    def send(self, messages: list[tuple[int, PeerMessage]]) -> None:
        """Queue one cycle's messages, each encoded once however many peers it goes to."""
        encoded: dict[int, bytes] = {}
        for to, message in messages:
            outbox = self.outboxes.get(to)
            if outbox is None:
                continue
            part = encoded.get(id(message))
            if part is None:
                part = encoded[id(message)] = encode_message(message)
            outbox.put(part)

    async def close(self) -> None:
        for outbox in self.outboxes.values():
            await outbox.close()
        if self.session is not None:
            await self.session.close()
