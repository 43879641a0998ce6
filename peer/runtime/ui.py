"""The web page every peer serves, and the live feed behind it.

`GET /` and `GET /ui/tasks/{id}` answer the page (files shipped in `peer/ops/web/`, no
CDN, no build step); `GET /ui/static/{name}` its script and style. `GET /events` is a
server-sent event stream of this peer's view of the cluster (what `GET /cluster`
answers), sent when the peer's state changes, at most `MAX_RATE` times a second, and
at least every `KEEPALIVE` seconds. At most `MAX_STREAMS` streams at once (503
beyond); the streams end when the peer stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import orjson
from aiohttp import web

from peer.runtime.node import Node

WEB = Path(__file__).resolve().parent.parent / "ops" / "web"
FILES = {"app.js": "text/javascript", "style.css": "text/css"}
MAX_STREAMS = 64
MAX_RATE = 4.0  # views a second at most per stream
KEEPALIVE = 2.0  # seconds: a view at least this often (it also shows the peer is up)
NODE_KEY = web.AppKey("ui_node", Node)
STREAM_TASKS: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("ui_streams")


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB / "index.html", headers={"Cache-Control": "no-cache"})


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(WEB / name, headers={"Content-Type": FILES[name]})


async def events(request: web.Request) -> web.StreamResponse:
    streams = request.app[STREAM_TASKS]
    if len(streams) >= MAX_STREAMS:
        body = {"error": {"code": "unavailable", "message": "too many event streams"}}
        return web.json_response(body, status=503, headers={"Retry-After": "5"})
    node = request.app[NODE_KEY]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    task = asyncio.current_task()
    assert task is not None
    streams.add(task)
    try:
        with contextlib.suppress(ConnectionResetError, asyncio.CancelledError):
            while True:
                sent = time.monotonic()
                view = orjson.dumps(node.view())
                await response.write(b"event: cluster\ndata: " + view + b"\n\n")
                await node.wait_changed(KEEPALIVE)
                await asyncio.sleep(max(0.0, 1.0 / MAX_RATE - (time.monotonic() - sent)))
    finally:
        streams.discard(task)
    return response


async def end_streams(app: web.Application) -> None:
    streams: set[asyncio.Task[None]] = app[STREAM_TASKS]
    for task in list(streams):
        task.cancel()


def add_ui_routes(app: web.Application, node: Node) -> None:
    app[NODE_KEY] = node
    app[STREAM_TASKS] = set()
    app.router.add_get("/", page)
    app.router.add_get("/ui/tasks/{task_id}", page)
    app.router.add_get("/ui/static/{name}", static)
    app.router.add_get("/events", events)
    app.on_shutdown.append(end_streams)
