"""Forwarding writes from a follower to the leader, many per request.

Writes that reach a follower queue here; one sender task sends everything queued in one
signed `POST /peer/writes` to the leader and hands each write its answer: a status, a
body and the log index the leader had applied when it answered (None from a leader
before that field). While one request is in flight the next batch gathers, so a busy
follower costs the leader one HTTP request per round, not one per client request. A
write whose forward fails gets `None` back, and its caller retries (its request id keeps
the retry from duplicating).
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

Answer = tuple[int, Any, int | None]  # status, body, the leader's applied index


Item = tuple[int, bytes, "asyncio.Future[Answer | None]"]  # leader, encoded write, answer


class Forwarder:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.session: aiohttp.ClientSession | None = None
        self._queue: list[Item] = []
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
        self._queue.append((leader, orjson.dumps(write), future))
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
                batch = self._next_batch()
                await self._send(batch[0][0], batch)

    def _next_batch(self) -> list[Item]:
        """The first queued writes for the first one's leader: at most `MAX_WRITES`, and
        at most `max_body` bytes in all (a single write alone may be bigger: the leader
        takes twice that), so a few big writes never make the leader refuse the rest."""
        leader, budget = self._queue[0][0], self.node.config.max_body
        batch: list[Item] = []
        size = 0
        for item in self._queue:
            if item[0] != leader:
                continue
            if batch and (len(batch) == MAX_WRITES or size + len(item[1]) > budget):
                break
            batch.append(item)
            size += len(item[1]) + 1
        taken = {id(item) for item in batch}
        self._queue = [item for item in self._queue if id(item) not in taken]
        return batch

    async def _send(self, leader: int, batch: list[Item]) -> None:
        answers = await self._post(leader, b"[" + b",".join(w for _, w, _ in batch) + b"]")
        if answers is not None and len(answers) != len(batch):
            answers = None
        for i, (_, _, future) in enumerate(batch):
            if not future.done():
                future.set_result(answers[i] if answers else None)

    async def _post(self, leader: int, body: bytes) -> list[Answer] | None:
        assert self.session is not None
        headers = self.node.transport.signer.headers(leader, "writes", time.time(), body)
        headers["Content-Type"] = "application/json"
        known = self.node.transport.urls.get(leader)  # (from the configuration in force)
        if known is None:
            return None  # a leader this peer cannot reach yet: as if unreachable
        url = known + PATH
        timeout = aiohttp.ClientTimeout(total=self.node.config.submit_wait + 1.0)
        try:
            async with self.session.post(url, data=body, headers=headers, timeout=timeout) as resp:
                if resp.status != 200:
                    return None
                answers = orjson.loads(await resp.read())
        except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError):
            return None
        try:
            return [(int(a[0]), a[1], int(a[2]) if len(a) > 2 else None) for a in answers]
        except (TypeError, ValueError, IndexError, KeyError):
            return None  # not the leader's answer shape: as if unreachable

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.session is not None:
            await self.session.close()
