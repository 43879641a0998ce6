"""The signed `/peer/...` routes: messages posted or streamed by other peers, and the
writes a follower forwards to this leader.

Each request or frame is verified first (HMAC for this peer and channel, fresh, never
seen before, and with mutual TLS a peer certificate), then decoded strictly and queued
for the driver; an unsigned request is refused before its body is read.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import replace

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from peer.registry import Registry
from peer.runtime.auth import SENDER, SIGNATURE, unseal, verify
from peer.runtime.forwarding import PATH as FORWARD_PATH
from peer.runtime.node import Node
from peer.runtime.responses import (
    NODE,
    REGISTRY,
    STREAMS,
    WRITES,
    Unauthorized,
    error,
    json_response,
    read_body,
)
from peer.runtime.service import Write
from peer.runtime.transport import MAX_FRAME, STREAM_PATH
from peer.runtime.transport import PATH as PEER_PATH
from peer.runtime.validation import BadRequest, check_requeue, check_schedule, check_spec
from peer.runtime.wire import WireError, decode_batch

log = logging.getLogger(__name__)


async def verified_body(request: web.Request, channel: str) -> bytes:
    """The body of a peer request whose signature holds (for this peer, this channel,
    fresh, never seen before); 401 otherwise. An unsigned request is refused before its
    body is read."""
    if SIGNATURE not in request.headers:
        raise Unauthorized("unsigned request")
    body = await read_body(request)
    node = request.app[NODE]
    tls = node.config.tls
    connection = request.transport
    if (
        tls is not None
        and tls.mutual
        and not (connection and connection.get_extra_info("peercert"))
    ):
        raise Unauthorized("a peer must present its certificate (mutual TLS)")
    transport = node.transport
    reason = verify(
        transport.secret, node.id, channel, request.headers, body, time.time(), transport.guard
    )
    if reason is not None:
        raise Unauthorized(reason)
    return body


async def post_peer_messages(request: web.Request) -> web.Response:
    body = await verified_body(request, "messages")
    try:
        messages = decode_batch(body)
    except WireError as exc:
        return error(400, "bad_message", str(exc))
    signer = request.headers[SENDER]
    sender = int(signer) if signer.isascii() and signer.isdigit() else -1
    if any(m.sender != sender for m in messages):
        return error(400, "bad_message", "message sender does not match the signed sender")
    request.app[NODE].deliver(messages)
    return web.Response(status=204)


async def peer_stream(request: web.Request) -> web.StreamResponse:
    """A peer's stream of signed frames, each a batch of messages for the driver."""
    node = request.app[NODE]
    await verified_body(request, "open")
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME, autoping=True)
    await ws.prepare(request)
    request.app[STREAMS].add(ws)
    async for frame in ws:
        if frame.type != WSMsgType.BINARY:
            continue
        refused = _take_frame(node, frame.data)
        if refused is not None:
            log.warning("closing a peer stream: %s", refused)
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=refused.encode()[:120])
            break
    return ws


def _take_frame(node: Node, frame: bytes) -> str | None:
    """Deliver one frame's messages; the reason it is refused otherwise."""
    transport = node.transport
    opened = unseal(transport.secret, node.id, frame, time.time(), transport.guard)
    if isinstance(opened, str):
        return opened
    sender, body = opened
    try:
        messages = decode_batch(body)
    except WireError as exc:
        return str(exc)
    if any(m.sender != sender for m in messages):
        return "message sender does not match the signed sender"
    node.deliver(messages)
    return None


async def post_peer_writes(request: web.Request) -> web.Response:
    """Writes a follower forwards to this leader, answered in order: each with its
    status, its body and the index this peer had applied once all were (the follower
    holds its reads until it has applied that far)."""
    body = await verified_body(request, "writes")
    signer = request.headers[SENDER]  # signed: the peer that forwarded these writes
    origin = int(signer) if signer.isascii() and signer.isdigit() else None
    try:
        writes = [replace(Write.from_json(w), origin=origin) for w in orjson.loads(body)]
        for write in writes:  # a signed peer is trusted, but what enters the log is checked
            check_forwarded(write, request.app[REGISTRY])
    except (orjson.JSONDecodeError, KeyError, TypeError, BadRequest) as exc:
        return error(400, "bad_message", f"malformed forwarded writes: {exc!r}")
    service = request.app[WRITES]
    replies = await asyncio.gather(*(service.write(w) for w in writes))
    applied = request.app[NODE].core.tasks.applied_index
    return json_response([[r.status, r.body, applied] for r in replies])


def check_forwarded(write: Write, registry: Registry) -> None:
    """The checks the follower made, made again by the leader (`BadRequest` if any fails)."""
    if write.op == "requeue":
        check_requeue(write.specs[0] if write.specs else None)
    elif write.op == "schedule_put":
        check_schedule(write.schedule, registry)
    else:
        for spec in write.specs:
            check_spec(spec, registry, batch=True)


async def close_streams(app: web.Application) -> None:
    """On shutdown, end the peers' incoming streams (they would hold the server open)."""
    streams: weakref.WeakSet[web.WebSocketResponse] = app[STREAMS]
    for ws in list(streams):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"peer stopping")


def add_peer_routes(app: web.Application) -> None:
    app.router.add_post(PEER_PATH, post_peer_messages)
    app.router.add_get(STREAM_PATH, peer_stream)
    app.router.add_post(FORWARD_PATH, post_peer_writes)
    app[STREAMS] = weakref.WeakSet()
    app.on_shutdown.append(close_streams)
