"""The asynchronous client of the cluster's public HTTP API: `AsyncClient` (its blocking
twin `Client` is in `peer.client.sync`; `peer.client` exports both).

Owns talking to the cluster from outside: choosing a peer from a list (any peer will do,
followers forward writes to the leader), rotating to the next peer when one cannot be
reached, retrying connection errors and 502/503/504 answers with tenacity (exponential
backoff with jitter, bounded in attempts and in total time, a 503's `Retry-After` taken
as a hint), giving every submitted task an idempotency key so that its own retries never
submit a task twice, and turning error answers into `ClientError`. It uses only the
public API and must not reach into a peer's internals.

Reads are served by the peer asked, which may lag the leader by a heartbeat: a `get` of
a task id this client has already been given retries a 404 briefly instead of failing.

    async with AsyncClient(["http://127.0.0.1:7001", "http://127.0.0.1:7002"]) as client:
        task = await client.submit("echo", {"hello": "world"})
        task = await client.wait(task["id"], timeout=30)

A cancel retried after a lost reply may answer 409 (the first attempt did cancel it).

A cluster with API tokens wants one: `token=`, else `$BULLYQ_TOKEN`; it goes in every
request's `Authorization: Bearer` header. A 401 or 403 is not retried. A cluster with
`[tls]` serves `https://` URLs; `ca=` (else `$BULLYQ_CA`) is the CA file that signed
the peers' certificates, when the system's own CAs did not.
"""

from __future__ import annotations

import os
import random
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

DEFAULT_PEER = "http://127.0.0.1:7001"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
RETRY_STATUSES = frozenset({502, 503, 504})
MAX_LONG_POLL = 60.0  # seconds: the most a peer holds one `GET /tasks/{id}?wait=S`
MAX_BACKOFF = 2.0  # seconds: the longest pause between two attempts
TOKEN_ENV = "BULLYQ_TOKEN"  # where a client finds its API token when given none
CA_ENV = "BULLYQ_CA"  # where it finds the CA file of a TLS cluster when given none

Task = dict[str, Any]
TaskList = list[Task]
Query = dict[str, str]


class ClientError(Exception):
    """The cluster refused the request: `status` is the HTTP status (4xx, 5xx)."""

    def __init__(self, status: int | None, code: str, message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        prefix = "" if self.status is None else f"{self.status} "
        return f"{prefix}{self.code}: {self.message}"


class Unavailable(ClientError):
    """No peer could serve the request within the retry budget (503, or none reachable).

    `status` is 503 (or 502/504) when a peer answered, None when none could be reached.
    """


class _Retryable(Exception):
    """One attempt failed in a way another attempt (maybe at another peer) may not."""

    def __init__(self, error: ClientError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _peer_list(peers: Sequence[str] | str) -> list[str]:
    items = peers.split(",") if isinstance(peers, str) else list(peers)
    urls = [url.strip().rstrip("/") for url in items if url.strip()]
    urls = [url if "://" in url else f"http://{url}" for url in urls]
    if not urls:
        raise ValueError("peers: at least one peer URL is required")
    return urls


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return None


def _error_of(status: int, body: Any) -> ClientError:
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        code, message = str(detail.get("code", "error")), str(detail.get("message", ""))
    else:
        code, message = "error", f"unexpected answer {body!r}"[:200]
    kind = Unavailable if status in RETRY_STATUSES else ClientError
    return kind(status, code, message)


def _decode(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return raw[:200].decode("utf-8", "replace")


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def _with_key(spec: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(spec)
    if out.get("key") is None:
        out["key"] = uuid.uuid4().hex
    return out


class AsyncClient:
    """A client of any peers of one cluster (aiohttp). Use `async with`, or `close()` it.

    `timeout` bounds one request (plus the wait of a long-poll); `retries` and
    `retry_time` bound the attempts of one call and the time they may take in all.
    """

    def __init__(
        self,
        peers: Sequence[str] | str = DEFAULT_PEER,
        timeout: float = 10.0,
        *,
        retries: int = 8,
        retry_time: float = 15.0,
        token: str | None = None,
        ca: str | None = None,
    ) -> None:
        self.peers = _peer_list(peers)
        self.ca = ca if ca is not None else os.environ.get(CA_ENV)
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.retries = retries
        self.retry_time = retry_time
        self._current = 0
        self._seen_id = 0
        self._session: aiohttp.ClientSession | None = None
        self._backoff = wait_random_exponential(multiplier=0.05, max=MAX_BACKOFF)

    @property
    def peer(self) -> str:
        """The peer the next request goes to."""
        return self.peers[self._current]

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------- writes

    async def submit(
        self,
        kind: str,
        args: Any = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        delay: float | None = None,
        depends_on: Sequence[int] | None = None,
        key: str | None = None,
    ) -> Task:
        """Submit one task; the task (an existing one when `key` was seen before).

        Without `key` a fresh one is generated, so retries of this call are harmless.
        """
        spec = _drop_none(
            {
                "kind": kind,
                "args": args,
                "queue": queue,
                "priority": priority,
                "max_attempts": max_attempts,
                "timeout": timeout,
                "delay": delay,
                "depends_on": None if depends_on is None else list(depends_on),
            }
        )
        spec["key"] = key if key is not None else uuid.uuid4().hex
        result: Task = await self._request("POST", "/tasks", body=spec)
        return result

    async def submit_batch(self, tasks: Sequence[Mapping[str, Any]]) -> TaskList:
        """Submit tasks together (they may name each other by `ref` / `after`), in order."""
        body = {"tasks": [_with_key(spec) for spec in tasks]}
        result = await self._request("POST", "/tasks/batch", body=body)
        tasks_out: TaskList = result["tasks"]
        return tasks_out

    async def cancel(self, task_id: int) -> Task:
        """Cancel a task; `ClientError` 409 when it is already terminal."""
        result: Task = await self._request("POST", f"/tasks/{int(task_id)}/cancel", body=None)
        return result

    async def retry(self, task_id: int) -> Task:
        """A new attempt budget for a failed or cancelled task; 409 `ClientError` for
        any other (or one whose dependency failed)."""
        result: Task = await self._request("POST", f"/tasks/{int(task_id)}/retry", body=None)
        return result

    async def requeue(
        self,
        state: str = "failed",
        queue: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """Retry every task the filter matches (bounded by `limit`), in one log entry:
        `{"requeued": n, "ids": [...]}`."""
        body = _drop_none({"state": state, "queue": queue, "kind": kind, "limit": limit})
        result: dict[str, Any] = await self._request("POST", "/tasks/requeue", body=body)
        return result

    async def drain(self, peer: int, drained: bool = True) -> dict[str, Any]:
        """No new assignments to `peer` (its running tasks finish), or again allowed."""
        action = "drain" if drained else "undrain"
        result: dict[str, Any] = await self._request(
            "POST", f"/members/{int(peer)}/{action}", body=None
        )
        return result

    async def members(self) -> dict[str, Any]:
        """The configuration in force: `{index, voters, learners, committed}`, each
        member as `{id, url}`."""
        result: dict[str, Any] = await self._request("GET", "/members")
        return result

    async def add_member(self, peer: int, url: str) -> dict[str, Any]:
        """Add `peer`, reached at `url`, as a learner (started with `peer serve --join`);
        the leader makes it a voter once it has caught up. Returns the configuration."""
        body = {"id": int(peer), "url": url}
        result: dict[str, Any] = await self._request("POST", "/members", body=body)
        return result

    async def remove_member(self, peer: int) -> dict[str, Any]:
        """Remove `peer` (a voter or a learner) from the cluster's configuration."""
        result: dict[str, Any] = await self._request("DELETE", f"/members/{int(peer)}")
        return result

    # ---------------------------------------------------------------- schedules

    async def put_schedule(self, schedule: Mapping[str, Any], replace: bool = False) -> Task:
        """Add a schedule (`{name, every | cron, task, catch_up?, overlap?, timezone?}`);
        an identical one is left as it is; a different one of that name is a 409
        `ClientError` unless `replace`."""
        params = {"replace": "1"} if replace else {}
        result: Task = await self._request("POST", "/schedules", params=params, body=dict(schedule))
        return result

    async def schedules(self) -> list[Task]:
        result = await self._request("GET", "/schedules")
        listed: list[Task] = result["schedules"]
        return listed

    async def schedule(self, name: str) -> Task:
        result: Task = await self._request("GET", f"/schedules/{quote(name, safe='')}")
        return result

    async def delete_schedule(self, name: str) -> Task:
        """Delete a schedule; a retry after a lost reply may answer 404."""
        path = f"/schedules/{quote(name, safe='')}"
        result: Task = await self._request("DELETE", path)
        return result

    async def pause_schedule(self, name: str, paused: bool = True) -> Task:
        """Pause a schedule, or resume it (`paused=False`: no tick of the pause fires)."""
        action = "pause" if paused else "resume"
        path = f"/schedules/{quote(name, safe='')}/{action}"
        result: Task = await self._request("POST", path, body=None)
        return result

    # -------------------------------------------------------------------- reads

    async def get(self, task_id: int, wait: float | None = None) -> Task:
        """The task; with `wait`, the peer holds the request up to `wait` (<= 60) seconds
        for the task to reach a terminal state."""
        params: Query = {}
        if wait is not None and wait > 0:
            wait = min(wait, MAX_LONG_POLL)
            params["wait"] = f"{wait:.3f}"
        path = f"/tasks/{int(task_id)}"
        # Ids come in apply order: an id at or below one this client was given exists, and
        # a 404 for it means the peer has not applied it yet (it lags a write), so retry.
        lagging = int(task_id) <= self._seen_id
        result: Task = await self._request(
            "GET", path, params=params, extra_time=wait or 0.0, retry_not_found=lagging
        )
        return result

    async def wait(self, task_id: int, timeout: float) -> Task:
        """Long-poll until the task is terminal or `timeout` seconds pass; the last task seen
        (check its `state`: it is not terminal when the time ran out)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            task = await self.get(task_id, wait=left if left > 0 else None)
            if task.get("state") in TERMINAL or deadline - time.monotonic() <= 0:
                return task

    async def list(
        self,
        state: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
        after: int | None = None,
    ) -> dict[str, Any]:
        """One page: `{"tasks": [...], "next": cursor or None}` (pass `next` as `after`)."""
        given = {"state": state, "queue": queue, "limit": limit, "after": after}
        params = {name: str(value) for name, value in _drop_none(given).items()}
        page: dict[str, Any] = await self._request("GET", "/tasks", params=params)
        return page

    async def iter_tasks(
        self, state: str | None = None, queue: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Task]:
        """Every matching task, oldest first, following the cursor page by page."""
        after: int | None = None
        while True:
            page = await self.list(state, queue, page_size, after)
            for task in page["tasks"]:
                yield task
            if page.get("next") is None:
                return
            after = page["next"]

    async def cluster(self) -> dict[str, Any]:
        """The answering peer's view of the cluster (`GET /cluster`)."""
        view: dict[str, Any] = await self._request("GET", "/cluster")
        return view

    async def health(self, ready: bool = False) -> dict[str, Any]:
        """`GET /health`; with `ready`, retries until a peer knows a ready leader, else
        raises `Unavailable`."""
        params = {"ready": "1"} if ready else {}
        health: dict[str, Any] = await self._request("GET", "/health", params=params)
        return health

    # ----------------------------------------------------------------- plumbing

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Query | None = None,
        body: Any = None,
        extra_time: float = 0.0,
        retry_not_found: bool = False,
    ) -> Any:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries) | stop_after_delay(self.retry_time),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        data = None if body is None else orjson.dumps(body)
        try:
            result: Any = await retrying(
                self._attempt, method, path, params or {}, data, extra_time, retry_not_found
            )
        except _Retryable as exc:
            raise exc.error from exc.__cause__
        self._remember(result)
        return result

    def _wait(self, state: RetryCallState) -> float:
        """Jittered exponential backoff, no shorter than about half a 503's Retry-After."""
        pause = float(self._backoff(state))
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, _Retryable) and error.retry_after:
            pause = max(pause, error.retry_after * random.uniform(0.3, 0.6))
        return min(pause, MAX_BACKOFF)

    async def _attempt(
        self,
        method: str,
        path: str,
        params: Query,
        data: bytes | None,
        extra_time: float,
        retry_not_found: bool,
    ) -> Any:
        index = self._current
        url = self.peers[index] + path
        timeout = aiohttp.ClientTimeout(total=self.timeout + extra_time)
        headers = self._auth if data is None else {"Content-Type": "application/json", **self._auth}
        try:
            async with self._open().request(
                method, url, params=params, data=data, headers=headers, timeout=timeout
            ) as resp:
                raw = await resp.read()
                status, retry_after = resp.status, _retry_after(resp.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._rotate(index)
            reason = str(exc) or type(exc).__name__
            error = Unavailable(None, "unreachable", f"{url}: {reason}")
            raise _Retryable(error) from exc
        if status == 404 and retry_not_found:
            raise _Retryable(_error_of(status, _decode(raw)))
        return self._answer(index, status, raw, retry_after)

    def _answer(self, index: int, status: int, raw: bytes, retry_after: float | None) -> Any:
        body = _decode(raw)
        if status < 300:
            return body
        error = _error_of(status, body)
        if status in RETRY_STATUSES:
            self._rotate(index)
            raise _Retryable(error, retry_after)
        raise error

    def _remember(self, result: Any) -> None:
        """Note the highest task id this client has been given (see `get`)."""
        tasks = result.get("tasks") if isinstance(result, dict) else None
        for task in tasks if isinstance(tasks, list) else [result]:
            if (
                isinstance(task, dict)
                and isinstance(task.get("id"), int)
                and "state" in task
                and "kind" in task
            ):
                self._seen_id = max(self._seen_id, task["id"])

    def _rotate(self, failed: int) -> None:
        """Move on to the next peer, unless a concurrent call already moved past `failed`."""
        if self._current == failed:
            self._current = (failed + 1) % len(self.peers)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            context = ssl.create_default_context(cafile=self.ca) if self.ca else True
            connector = aiohttp.TCPConnector(ssl=context)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session
