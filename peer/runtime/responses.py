"""What every HTTP handler of a peer shares: the app's keys, JSON answers and errors,
and reading a body within its time and size limits."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import orjson
from aiohttp import web

from peer.registry import Registry
from peer.runtime.node import Node
from peer.runtime.service import Reply, WriteService, bad_request_reply
from peer.runtime.validation import BadRequest

NODE = web.AppKey("node", Node)
WRITES = web.AppKey("writes", WriteService)
REGISTRY = web.AppKey("registry", Registry)
STREAMS = web.AppKey("streams", weakref.WeakSet[web.WebSocketResponse])


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers or None)


def bad_request(exc: BadRequest) -> web.Response:
    reply = bad_request_reply(exc)
    return json_response(reply.body, reply.status, reply.headers)


class Unauthorized(Exception):
    pass


def reply(result: Reply) -> web.Response:
    return json_response(result.body, result.status, result.headers)


async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The request's body, within `body_timeout` (a client trickling it is cut off: 408)
    and `limit` bytes (413)."""
    try:
        async with asyncio.timeout(request.app[NODE].config.body_timeout):
            body = await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout() from None
    if limit is not None and len(body) > limit:
        raise web.HTTPRequestEntityTooLarge(limit, len(body))
    return body


async def read_json(request: web.Request) -> Any:
    """The request's body as JSON (400 naming `body` if it is not)."""
    body = await read_body(request, request.app[NODE].config.max_body)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body", "is not valid JSON") from None
