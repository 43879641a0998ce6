"""The OpenAPI 3 contract of the public API, served at `GET /openapi.json`.

(Being written: for now a minimal document.)
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


def document() -> dict[str, Any]:
    """The contract: every public route, its parameters, bodies and answers."""
    return {"openapi": "3.0.3", "info": {"title": "bullyq", "version": "0.1.0"}, "paths": {}}


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(document()), content_type="application/json")


def add_openapi_routes(app: web.Application) -> None:
    app.router.add_get("/openapi.json", get_openapi)
