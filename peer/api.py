"""The HTTP surface of a peer: the public API and the signed `/peer/...` endpoints.

Handlers validate and translate; they never touch protocol state directly. Peer
messages are verified (HMAC, freshness), decoded strictly, then queued for the driver.
Errors are `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from peer.auth import SENDER, verify
from peer.node import Node
from peer.transport import PATH as PEER_PATH
from peer.wire import WireError, decode_batch

NODE = web.AppKey("node", Node)


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers or None)


async def get_cluster(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].view())


async def get_health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    view = node.view()
    if request.query.get("ready") in ("1", "true") and not view["ready"]:
        return error(503, "not_ready", "no ready leader is known", **{"Retry-After": "1"})
    return json_response({"ok": True, "id": node.id, "leader": view["leader"]})


async def post_peer_messages(request: web.Request) -> web.Response:
    node = request.app[NODE]
    body = await request.read()
    reason = verify(node.transport.secret, dict(request.headers), body, time.time())
    if reason is not None:
        return error(401, "unauthorized", reason)
    try:
        messages = decode_batch(body)
    except WireError as exc:
        return error(400, "bad_message", str(exc))
    sender = int(request.headers[SENDER]) if request.headers[SENDER].isdigit() else -1
    if any(m.sender != sender for m in messages):
        return error(400, "bad_message", "message sender does not match the signed sender")
    node.deliver(messages)
    return web.Response(status=204)


def build_app(node: Node) -> web.Application:
    app = web.Application(client_max_size=node.config.max_body)
    app[NODE] = node
    app.router.add_get("/cluster", get_cluster)
    app.router.add_get("/health", get_health)
    app.router.add_post(PEER_PATH, post_peer_messages)
    return app
