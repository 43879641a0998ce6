"""Who may call which route: the bearer-token check in front of the public API.

With `[auth]` tokens configured, every request but the public ones carries
`Authorization: Bearer <token>`. A missing or unknown token is 401, a token without the
route's role 403; both are raised as `Denied` before the handler runs, so nothing
changes. Public: `/health`, `/openapi.json`, the web page's files (its data needs a
token) and the signed `/peer/...` routes, which carry their own HMAC. `shell` tasks,
and retrying or requeueing them, need `admin` on top of the route's role (`demand`).
The token itself is never logged or echoed; only its name is.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from peer.tokens import ApiToken, AuthConfig, allows

TOKEN = web.AppKey("auth", AuthConfig)
PUBLIC = frozenset({"/health", "/openapi.json", "/", "/ui/tasks/{task_id}", "/ui/static/{name}"})
# changes on these need admin (reads need read, as anywhere)
ADMIN_ROUTES = frozenset({"/members/{peer}/{action}", "/members", "/members/{peer}"})
REQUEST_TOKEN = "api_token"  # request key: the ApiToken that authorised the request
SHELL = "shell"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Denied(Exception):
    """A request refused for want of a token (401) or of a role (403)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="bullyq"'} if self.status == 401 else {}


def _same_origin(request: web.Request) -> bool:
    """No `Origin` (not a browser, or the same page), or one naming this peer's host."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin.partition("://")[2].rstrip("/") == request.host


def needed_role(method: str, path: str, auth: AuthConfig) -> str | None:
    """The role a route needs (`path` as registered, e.g. `/tasks/{task_id}`), or None
    when it is public."""
    if path in PUBLIC or path.startswith("/peer/"):
        return None
    if path == "/metrics" and auth.metrics_public:
        return None
    if path in ADMIN_ROUTES and method not in SAFE_METHODS:
        return "admin"
    return "read" if method in SAFE_METHODS else "write"


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def authorise(auth: AuthConfig, needed: str, header: str | None) -> ApiToken:
    """The token that may do what needs `needed`; `Denied` otherwise."""
    presented = bearer(header)
    if presented is None:
        raise Denied(401, "unauthorized", "this needs a token: Authorization: Bearer <token>")
    token = auth.identify(presented) if presented.isascii() else None
    if token is None:
        raise Denied(401, "unauthorized", "unknown token")
    if not allows(token.role, needed):
        message = f"token {token.name!r} has role {token.role}; this needs {needed}"
        raise Denied(403, "forbidden", message)
    return token


def demand(request: web.Request, needed: str, why: str) -> None:
    """Refuse (403) unless the request's token, if auth is on, has `needed`."""
    token = request.get(REQUEST_TOKEN)
    if isinstance(token, ApiToken) and not allows(token.role, needed):
        message = f"{why} needs role {needed}; token {token.name!r} has {token.role}"
        raise Denied(403, "forbidden", message)


def is_admin(request: web.Request) -> bool:
    """Whether the request may do what needs admin (always, with auth off)."""
    token = request.get(REQUEST_TOKEN)
    return not isinstance(token, ApiToken) or allows(token.role, "admin")


def demand_for_kinds(request: web.Request, kinds: Iterable[str]) -> None:
    if SHELL in kinds:
        demand(request, "admin", "a shell task")


def check_token(request: web.Request) -> None:
    """Before the handler runs: `Denied` unless the request may call its route; with
    auth off, a write a browser sends from another site (its `Origin` is not this
    peer). Remembers the token for `demand`."""
    auth = request.app[TOKEN]
    if not auth.enabled:
        if request.method not in SAFE_METHODS and not _same_origin(request):
            raise Denied(403, "forbidden", "a write from another site's page is refused")
        return
    route = request.match_info.route.resource
    path = route.canonical if route is not None else request.path
    needed = needed_role(request.method, path, auth)
    if needed is not None:
        request[REQUEST_TOKEN] = authorise(auth, needed, request.headers.get("Authorization"))
