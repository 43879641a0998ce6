"""Forwarding writes from a follower to the leader, many per frame, over one stream.

Writes that reach a follower queue here. One sender task sends everything queued as one
numbered, signed `forward` frame on a WebSocket to the leader (`GET /peer/forward`,
opened with signed headers), and goes on with the next without waiting for the answer:
at most `IN_FLIGHT` frames unanswered, so a write that arrives while others are on
their way joins the leader's next round instead of waiting for theirs to commit. A
reader task takes the leader's signed `answers` frames and hands each write its answer.
A frame costs the leader far less than an HTTP request. A write whose forward fails (no
stream, the stream closed before its answer, a frame the leader refused) gets `None`
back, and its caller retries (its request id keeps the retry from duplicating). A leader
without the stream (an older version) is sent `POST /peer/writes` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiohttp
import orjson

from peer.runtime.auth import unseal
from peer.runtime.node import Node
from peer.runtime.transport import MAX_FRAME

log = logging.getLogger(__name__)

PATH = "/peer/writes"  # one signed batch per request (older leaders, tools and tests)
STREAM_PATH = "/peer/forward"
MAX_WRITES = 256
IN_FLIGHT = 4  # frames sent and not answered yet, at most
CONNECT_WAIT = 2.0  # seconds to open the stream, at most

Answer = tuple[int, Any]


Item = tuple[int, bytes, "asyncio.Future[Answer | None]"]  # leader, encoded write, answer


def parse_answers(raw: Any, count: int) -> list[Answer] | None:
    """The leader's answers to `count` writes, or None if they are not that."""
    try:
        answers = [(int(a[0]), a[1]) for a in raw]
    except (TypeError, ValueError, IndexError, KeyError):
        return None  # not the leader's answer shape: as if unreachable
    return answers if len(answers) == count else None


class _Stream:
    """One open stream to a leader: its socket, the frames awaiting answers, the reader."""

    def __init__(self, forwarder: Forwarder, leader: int, ws: aiohttp.ClientWebSocketResponse):
        self.leader = leader
        self.ws = ws
        self.pending: dict[int, list[asyncio.Future[Answer | None]]] = {}
        self.answered = asyncio.Event()  # set whenever a frame is answered or the stream ends
        self.closed = False
        self.reader = asyncio.create_task(self._read(forwarder), name=f"forward<-{leader}")

    async def _read(self, forwarder: Forwarder) -> None:
        node = forwarder.node
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    continue
                transport = node.transport
                opened = unseal(
                    transport.secret, node.id, message.data, time.time(), transport.guard, "answers"
                )
                if isinstance(opened, str) or opened[0] != self.leader:
                    log.warning("closing the forward stream to %s: %s", self.leader, opened)
                    break
                self._take(opened[1])
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            pass
        finally:
            await self.end()

    def _take(self, body: bytes) -> None:
        try:
            number, raw = orjson.loads(body)
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return
        futures = self.pending.pop(number, None) if isinstance(number, int) else None
        if futures is None:
            return
        answers = parse_answers(raw, len(futures))
        for i, future in enumerate(futures):
            if not future.done():
                future.set_result(answers[i] if answers else None)
        self.answered.set()

    async def room(self, timeout: float) -> bool:
        """Wait until fewer than `IN_FLIGHT` frames await answers (False: the stream
        ended, or the leader answered none within `timeout`: it is ended then)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not self.closed and len(self.pending) >= IN_FLIGHT:
                    self.answered.clear()
                    await self.answered.wait()
        if not self.closed and len(self.pending) >= IN_FLIGHT:
            await self.end()
        return not self.closed

    async def end(self) -> None:
        """Close the stream; the writes still awaiting answers get None."""
        self.closed = True
        for futures in self.pending.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)
        self.pending.clear()
        self.answered.set()
        if not self.ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                await self.ws.close()


class Forwarder:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.session: aiohttp.ClientSession | None = None
        self._queue: list[Item] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stream: _Stream | None = None
        self._number = 0  # of the last frame sent
        self._post_only: set[int] = set()  # leaders that have no forward stream

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
        writes = b",".join(w for _, w, _ in batch)
        futures = [future for _, _, future in batch]
        if leader in self._post_only:
            answers = await self._post(leader, b"[" + writes + b"]")
            answers = parse_answers(answers, len(batch)) if answers is not None else None
            for i, future in enumerate(futures):
                if not future.done():
                    future.set_result(answers[i] if answers else None)
            return
        stream = await self._stream_to(leader)
        if stream is None or not await stream.room(self.node.config.submit_wait + 1.0):
            for future in futures:
                if not future.done():
                    future.set_result(None)
            return
        self._number += 1
        stream.pending[self._number] = futures
        body = b"[%d,[" % self._number + writes + b"]]"
        frame = self.node.transport.signer.frame(leader, time.time(), body, "forward")
        try:
            await stream.ws.send_bytes(frame)
        except (aiohttp.ClientError, ConnectionError, RuntimeError):
            await stream.end()

    async def _stream_to(self, leader: int) -> _Stream | None:
        """The open stream to `leader` (opened now if need be), or None."""
        stream = self._stream
        if stream is not None and stream.leader == leader and not stream.closed:
            return stream
        if stream is not None:
            await stream.end()  # (another leader now: what it had not answered is retried)
        self._stream = None
        known = self.node.transport.urls.get(leader)  # (from the configuration in force)
        if known is None or self.session is None:
            return None  # a leader this peer cannot reach yet: as if unreachable
        headers = self.node.transport.signer.headers(leader, "open", time.time(), b"")
        try:
            async with asyncio.timeout(CONNECT_WAIT):
                ws = await self.session.ws_connect(
                    known + STREAM_PATH, headers=headers, max_msg_size=MAX_FRAME
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 404:
                self._post_only.add(leader)
            return None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None
        self._stream = _Stream(self, leader, ws)
        return self._stream

    async def _post(self, leader: int, body: bytes) -> Any:
        assert self.session is not None
        headers = self.node.transport.signer.headers(leader, "writes", time.time(), body)
        headers["Content-Type"] = "application/json"
        known = self.node.transport.urls.get(leader)
        if known is None:
            return None
        timeout = aiohttp.ClientTimeout(total=self.node.config.submit_wait + 1.0)
        try:
            async with self.session.post(
                known + PATH, data=body, headers=headers, timeout=timeout
            ) as resp:
                if resp.status != 200:
                    return None
                return orjson.loads(await resp.read())
        except (TimeoutError, aiohttp.ClientError, OSError, orjson.JSONDecodeError):
            return None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._stream is not None:
            await self._stream.end()
            self._stream.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stream.reader
        if self.session is not None:
            await self.session.close()
