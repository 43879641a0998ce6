"""Forwarding writes from a follower to the leader, many per request.

Writes that reach a follower queue here; one sender task sends everything queued in one
signed `POST /peer/writes` to the leader and hands each write its answer. While one
request is in flight the next batch gathers, so a busy follower costs the leader one
HTTP request per round, not one per client request. A write whose forward fails gets
`None` back, and its caller retries (its request id keeps the retry from duplicating).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import orjson

from peer.runtime.node import Node

PATH = "/peer/writes"
MAX_WRITES = 256

Answer = tuple[int, Any]


class Forwarder:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.session: aiohttp.ClientSession | None = None
        self._queue: list[tuple[int, dict[str, Any], asyncio.Future[Answer | None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def forward(self, leader: int, write: dict[str, Any], deadline: float) -> Answer | None:
        """The leader's (status, body) for `write`, or None when it could not be asked."""
        if self._task is None:
            tls = self.node.config.tls
            ssl = tls.client_context(self.node.id) if tls is not None else True
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl))
            self._task = asyncio.create_task(self._run(), name="forwarder")
        future: asyncio.Future[Answer | None] = asyncio.get_running_loop().create_future()
        self._queue.append((leader, write, future))
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.05, deadline - time.monotonic())):
                return await asyncio.shield(future)
        return None

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                leader = self._queue[0][0]
                batch = [item for item in self._queue[:MAX_WRITES] if item[0] == leader]
                self._queue = [item for item in self._queue if item not in batch]
                await self._send(leader, batch)

    async def _send(
        self, leader: int, batch: list[tuple[int, dict[str, Any], asyncio.Future[Answer | None]]]
    ) -> None:
        answers = await self._post(leader, [write for _, write, _ in batch])
        for i, (_, _, future) in enumerate(batch):
            if not future.done():
                future.set_result(answers[i] if answers else None)

    async def _post(self, leader: int, writes: list[dict[str, Any]]) -> list[Answer] | None:
        assert self.session is not None
        body = orjson.dumps(writes)
        headers = self.node.transport.signer.headers(leader, "writes", time.time(), body)
        headers["Content-Type"] = "application/json"
        url = self.node.config.node(leader).url + PATH
        timeout = aiohttp.ClientTimeout(total=self.node.config.submit_wait + 1.0)
        try:
            async with self.session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                if resp.status != 200:
                    return None
                answers = orjson.loads(await resp.read())
        except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError):
            return None
        if not isinstance(answers, list) or len(answers) != len(writes):
            return None
        return [(int(a[0]), a[1]) for a in answers]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.session is not None:
            await self.session.close()
