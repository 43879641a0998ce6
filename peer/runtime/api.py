"""The HTTP surface of a peer: the public API's handlers and the app that serves them
with the signed `/peer/...` routes (`peer.runtime.peer_routes`), the web page and the
contract.

Handlers validate and translate; they never touch protocol state directly: writes go
through `peer.runtime.service`, reads come from this peer's applied task table.
Errors are `{"error": {"code", "message"}}`; a refused request changes nothing.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from peer.registry import Registry
from peer.runtime.access import SHELL as SHELL_KIND
from peer.runtime.access import (
    TOKEN,
    Denied,
    check_token,
    demand,
    demand_for_kinds,
    is_admin,
)
from peer.runtime.member_routes import add_member_routes
from peer.runtime.metrics import PeerMetrics, get_metrics
from peer.runtime.node import Node
from peer.runtime.openapi import add_openapi_routes
from peer.runtime.peer_routes import add_peer_routes
from peer.runtime.responses import (
    NODE,
    REGISTRY,
    WRITES,
    Unauthorized,
    bad_request,
    error,
    json_response,
    read_json,
    reply,
)
from peer.runtime.service import (
    LimitReached,
    Write,
    WriteService,
    wait_terminal,
)
from peer.runtime.ui import add_ui_routes
from peer.runtime.validation import (
    LIST_FILTERS,
    BadRequest,
    check_batch,
    check_list_query,
    check_requeue,
    check_schedule,
    check_spec,
    check_wait,
)

log = logging.getLogger(__name__)
CATCHING_UP = "X-Catching-Up"  # response header of a read served while catching up


async def get_cluster(request: web.Request) -> web.Response:
    return json_response(request.app[NODE].view())


async def get_health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if request.query.get("ready") in ("1", "true") and not node.core.leader_is_ready():
        return error(503, "not_ready", "no ready leader is known", **{"Retry-After": "1"})
    return json_response({"ok": True, "id": node.id, "leader": node.core.leader})


async def post_task(request: web.Request) -> web.Response:
    data = await read_json(request)
    spec = check_spec(data, request.app[REGISTRY])
    demand_for_kinds(request, [spec["kind"]])
    return reply(await request.app[WRITES].write(Write("submit", [spec])))


async def post_batch(request: web.Request) -> web.Response:
    data = await read_json(request)
    specs, order = check_batch(data, request.app[REGISTRY])
    demand_for_kinds(request, {spec["kind"] for spec in specs})
    return reply(await request.app[WRITES].write(Write("submit", specs, order)))


def task_id_of(request: web.Request) -> int:
    raw = request.match_info["task_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise BadRequest("id", "must be a task id (a positive integer)")
    return int(raw)


async def get_task(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    unknown = sorted(set(request.query) - {"wait"})
    if unknown:
        raise BadRequest(unknown[0], "unknown parameter")
    wait = check_wait(request.query.get("wait"))
    node = request.app[NODE]
    table = node.core.tasks
    if table.get(task_id) is None and task_id >= table.next_id:  # (not seen here yet)
        await request.app[WRITES].confirm(node.config.submit_wait)
    if wait:
        await wait_terminal(node, task_id, wait)
    table = node.core.tasks
    task = table.get(task_id)
    if task is None:
        gone = " (forgotten: retention)" if task_id < table.next_id else ""
        return error(404, "not_found", f"no task {task_id}{gone}", **read_headers(node))
    return json_response(task.to_json(), headers=read_headers(node) or None)


async def list_tasks(request: web.Request) -> web.Response:
    state, queue, limit, after = check_list_query(request.query)
    node = request.app[NODE]
    extra = {name: request.query[name] for name in LIST_FILTERS if request.query.get(name)}
    tasks, cursor = node.core.tasks.list(state, queue, limit, after, **extra)
    body = {"tasks": [t.to_json() for t in tasks], "next": cursor}
    return json_response(body, headers=read_headers(node) or None)


def read_headers(node: Node) -> dict[str, str]:
    """A read served by a follower still catching up says so: `X-Catching-Up` is the
    number of committed entries it knows it lacks (its reads may miss them), counting
    those of writes acknowledged through it that it has not applied (a read that waited
    `submit_wait` for them in vain)."""
    lacking = node.reads_wait_for - node.core.tasks.applied_index
    if node.core.catching_up or lacking > 0:
        return {CATCHING_UP: str(max(node.core.behind, lacking))}
    return {}


async def cancel_task(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    return reply(await request.app[WRITES].write(Write("cancel", task_id=task_id)))


async def retry_task(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    task = request.app[NODE].core.tasks.get(task_id)
    demand_for_kinds(request, [task.kind] if task is not None else [])
    write = Write("retry", task_id=task_id, admin=is_admin(request))
    return reply(await request.app[WRITES].write(write))


async def requeue_tasks(request: web.Request) -> web.Response:
    query = check_requeue(await read_json(request))
    if SHELL_KIND in request.app[REGISTRY] and query.get("kind") in (None, SHELL_KIND):
        demand(request, "admin", "a requeue that may match shell tasks (give another kind)")
    write = Write("requeue", [query], admin=is_admin(request))
    return reply(await request.app[WRITES].write(write))


async def drain_member(request: web.Request) -> web.Response:
    raw = request.match_info["peer"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        raise BadRequest("peer", "must be a peer id")
    drained = request.match_info["action"] == "drain"
    write = Write("drain", task_id=int(raw), flag=drained)
    return reply(await request.app[WRITES].write(write))


async def post_schedule(request: web.Request) -> web.Response:
    unknown = sorted(set(request.query) - {"replace"})
    if unknown:
        raise BadRequest(unknown[0], "unknown parameter")
    replace = request.query.get("replace", "0")
    if replace not in ("0", "1"):
        raise BadRequest("replace", "must be 0 or 1")
    schedule = check_schedule(await read_json(request), request.app[REGISTRY])
    demand_for_kinds(request, [schedule["task"]["kind"]])
    write = Write("schedule_put", schedule=schedule, flag=replace == "1")
    return reply(await request.app[WRITES].write(write))


async def list_schedules(request: web.Request) -> web.Response:
    book = request.app[NODE].core.tasks.schedules
    return json_response({"schedules": [s.to_json() for _, s in sorted(book.schedules.items())]})


async def get_schedule(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    schedule = request.app[NODE].core.tasks.schedules.get(name)
    if schedule is None:
        return error(404, "not_found", f"no schedule {name!r}")
    return json_response(schedule.to_json())


async def delete_schedule(request: web.Request) -> web.Response:
    write = Write("schedule_delete", name=request.match_info["name"])
    return reply(await request.app[WRITES].write(write))


async def pause_schedule(request: web.Request) -> web.Response:
    paused = request.match_info["action"] == "pause"
    write = Write("schedule_pause", name=request.match_info["name"], flag=paused)
    return reply(await request.app[WRITES].write(write))


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one middleware around every handler (one layer per request, not several):
    the token check first, then a read waits until this peer has applied the writes
    acknowledged through it (read your writes), then every refusal as its JSON error."""
    try:
        check_token(request)
        node = request.app[NODE]
        if node.behind() and _gated(request):
            await request.app[WRITES].catch_up(node.config.submit_wait)
        return await handler(request)
    except BadRequest as exc:
        return bad_request(exc)
    except LimitReached as exc:
        return reply(exc.reply)
    except Unauthorized as exc:
        return error(401, "unauthorized", str(exc))
    except Denied as exc:
        return error(exc.status, exc.code, exc.message, **exc.headers)
    except web.HTTPRequestEntityTooLarge:
        return error(413, "too_large", f"body over {request.app[NODE].config.max_body} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)


GATED = ("/tasks", "/schedules", "/members")  # the reads of what client writes change


def _gated(request: web.Request) -> bool:
    """A read that waits for this peer to apply the writes acknowledged through it: of
    tasks, schedules or members (the status, page, health and peer routes never wait)."""
    return request.method in ("GET", "HEAD") and request.path.startswith(GATED)


def build_app(node: Node, registry: Registry) -> web.Application:
    metrics = PeerMetrics(node)
    app = web.Application(
        client_max_size=2 * node.config.max_body + 65536,  # forwarded writes: see forwarding
        middlewares=[metrics.timing, errors_as_json],
    )
    app[TOKEN] = node.config.auth
    app[NODE] = node
    app[REGISTRY] = registry
    app[WRITES] = WriteService(node)
    app.router.add_get("/cluster", get_cluster)
    app.router.add_get("/health", get_health)
    app.router.add_get("/metrics", functools.partial(get_metrics, metrics=metrics))
    app.router.add_post("/tasks", post_task)
    app.router.add_post("/tasks/batch", post_batch)
    app.router.add_get("/tasks", list_tasks)
    app.router.add_get("/tasks/{task_id}", get_task)
    app.router.add_post("/tasks/requeue", requeue_tasks)
    app.router.add_post("/tasks/{task_id}/cancel", cancel_task)
    app.router.add_post("/tasks/{task_id}/retry", retry_task)
    app.router.add_post("/members/{peer}/{action:drain|undrain}", drain_member)
    app.router.add_post("/schedules", post_schedule)
    app.router.add_get("/schedules", list_schedules)
    app.router.add_get("/schedules/{name}", get_schedule)
    app.router.add_delete("/schedules/{name}", delete_schedule)
    app.router.add_post("/schedules/{name}/{action:pause|resume}", pause_schedule)
    add_member_routes(app)
    add_peer_routes(app)
    add_ui_routes(app, node)
    add_openapi_routes(app)
    app.on_cleanup.append(lambda app: app[WRITES].close())
    return app
