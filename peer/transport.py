"""Sending peer messages over HTTP: one outbox per peer, batched, signed, fire-and-forget.

Each destination has one sender task and at most one request in flight; whatever the
driver queues meanwhile goes out together in the next request. A peer that does not
answer costs a dropped batch, never a blocked driver: the protocol retransmits what
matters (heartbeats, probes, claims) on its own timers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

import aiohttp

from peer.auth import sign
from peer.core import PeerMessage
from peer.wire import encode_batch

log = logging.getLogger(__name__)

MAX_BATCH = 512
MAX_QUEUED = 20_000
PATH = "/peer/messages"


class PeerOutbox:
    """The queue and sender task for one destination peer."""

    def __init__(self, session: aiohttp.ClientSession, url: str, sender: int, secret: bytes):
        self.session = session
        self.url = url + PATH
        self.sender = sender
        self.secret = secret
        self.queue: deque[PeerMessage] = deque(maxlen=MAX_QUEUED)
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"outbox->{url}")

    def put(self, message: PeerMessage) -> None:
        self.queue.append(message)
        self.wake.set()

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.queue:
                count = min(len(self.queue), MAX_BATCH)
                batch = [self.queue.popleft() for _ in range(count)]
                await self._post(batch)

    async def _post(self, batch: list[PeerMessage]) -> None:
        body = encode_batch(batch)
        headers = sign(self.secret, self.sender, time.time(), body)
        headers["Content-Type"] = "application/json"
        try:
            async with self.session.post(self.url, data=body, headers=headers) as resp:
                if resp.status >= 300:
                    log.warning("peer %s refused a batch: %s", self.url, resp.status)
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass  # unreachable peer: the protocol's timers resend what matters


class Transport:
    """All outboxes of one peer."""

    def __init__(self, node_id: int, urls: dict[int, str], secret: bytes) -> None:
        self.node_id = node_id
        self.urls = urls
        self.secret = secret
        self.session: aiohttp.ClientSession | None = None
        self.outboxes: dict[int, PeerOutbox] = {}

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=1.0, connect=0.3)
        connector = aiohttp.TCPConnector(limit_per_host=2)
        self.session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        for peer, url in self.urls.items():
            if peer != self.node_id:
                self.outboxes[peer] = PeerOutbox(self.session, url, self.node_id, self.secret)

    def send(self, to: int, message: PeerMessage) -> None:
        outbox = self.outboxes.get(to)
        if outbox is not None:
            outbox.put(message)

    async def close(self) -> None:
        for outbox in self.outboxes.values():
            outbox.task.cancel()
        await asyncio.gather(*(o.task for o in self.outboxes.values()), return_exceptions=True)
        if self.session is not None:
            await self.session.close()
