"""The membership routes: `GET /members` (the configuration in force), `POST /members`
(add a peer, as a learner) and `DELETE /members/{peer}` (remove one). Changes need role
admin and go through the leader like any write (`peer.runtime.member_writes`).

A new member's url is checked here: `http://` or `https://` as the cluster's own peers
(TLS or not), a host and a port, nothing else (no path, query, user or fragment).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from peer.runtime.member_writes import members_json
from peer.runtime.responses import NODE, WRITES, json_response, read_json, reply
from peer.runtime.service import Write
from peer.runtime.validation import BadRequest

MAX_PEER_ID = (1 << 31) - 1


async def get_members(request: web.Request) -> web.Response:
    return json_response(members_json(request.app[NODE]))


async def post_member(request: web.Request) -> web.Response:
    peer, url = check_member(await read_json(request), request.app[NODE].address.scheme)
    return reply(await request.app[WRITES].write(Write("member_add", task_id=peer, name=url)))


async def delete_member(request: web.Request) -> web.Response:
    raw = request.match_info["peer"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or int(raw) == 0:
        raise BadRequest("peer", "must be a peer id (a positive integer)")
    return reply(await request.app[WRITES].write(Write("member_remove", task_id=int(raw))))


def check_member(data: Any, scheme: str) -> tuple[int, str]:
    """(peer id, url) of a `POST /members` body: `{"id": 6, "url": "http://host:port"}`."""
    if not isinstance(data, dict):
        raise BadRequest("body", "must be an object with id and url")
    unknown = sorted(set(data) - {"id", "url"})
    if unknown:
        raise BadRequest(unknown[0], "unknown field")
    peer = data.get("id")
    if isinstance(peer, bool) or not isinstance(peer, int) or not 0 < peer <= MAX_PEER_ID:
        raise BadRequest("id", f"must be an integer from 1 to {MAX_PEER_ID}")
    url = data.get("url")
    if not isinstance(url, str) or len(url) > 300:
        raise BadRequest("url", "must be a url like http://HOST:PORT")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadRequest("url", "must be a url like http://HOST:PORT") from None
    if parts.scheme != scheme:
        raise BadRequest("url", f"this cluster's peers speak {scheme}://")
    extra = parts.path not in ("", "/") or parts.query or parts.fragment or parts.username
    if not parts.hostname or port is None or port == 0 or extra:
        raise BadRequest("url", f"must be {scheme}://HOST:PORT and nothing else")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return peer, f"{scheme}://{host}:{port}"


def add_member_routes(app: web.Application) -> None:
    app.router.add_get("/members", get_members)
    app.router.add_post("/members", post_member)
    app.router.add_delete("/members/{peer}", delete_member)
