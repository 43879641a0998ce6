"""The blocking client `Client`: `AsyncClient` run on a private event loop.

Owns only the bridge from blocking calls to the async client: one `asyncio.Runner` per
`Client`, the context-manager and `close()` lifecycle, and a blocking twin of every public
`AsyncClient` method, generated from it so that the signatures, docstrings and behaviour
cannot drift apart. Everything about talking to peers (retries, rotation, idempotency
keys, errors) stays in `peer.client.asynchronous`.

    with Client("http://127.0.0.1:7001,http://127.0.0.1:7002") as client:
        task = client.wait(client.submit("echo", {"hello": "world"})["id"], timeout=30)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from peer.client.asynchronous import DEFAULT_PEER, AsyncClient, Task

P = ParamSpec("P")
R = TypeVar("R")


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[Client, P], R]:
    """A `Client` method that runs `method` of its `AsyncClient` to completion."""

    @functools.wraps(method)
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._runner.run(method(self._client, *args, **kwargs))

    call.__qualname__ = f"Client.{method.__name__}"
    return call


class Client:
    """The blocking twin of `AsyncClient`, with the same methods.

    It runs a private event loop (`asyncio.Runner`), so it must not be used from inside a
    running event loop (a coroutine): use `AsyncClient` there. Not thread-safe. Use it as
    a context manager, or `close()` it.
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
        self._runner = asyncio.Runner()
        self._closed = False
        self._client = AsyncClient(
            peers, timeout, retries=retries, retry_time=retry_time, token=token, ca=ca
        )

    @property
    def peers(self) -> list[str]:
        return self._client.peers

    @property
    def peer(self) -> str:
        return self._client.peer

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._client.close())
        finally:
            self._runner.close()

    submit = _blocking(AsyncClient.submit)
    submit_batch = _blocking(AsyncClient.submit_batch)
    cancel = _blocking(AsyncClient.cancel)
    retry = _blocking(AsyncClient.retry)
    requeue = _blocking(AsyncClient.requeue)
    drain = _blocking(AsyncClient.drain)
    members = _blocking(AsyncClient.members)
    add_member = _blocking(AsyncClient.add_member)
    remove_member = _blocking(AsyncClient.remove_member)
    put_schedule = _blocking(AsyncClient.put_schedule)
    schedules = _blocking(AsyncClient.schedules)
    schedule = _blocking(AsyncClient.schedule)
    delete_schedule = _blocking(AsyncClient.delete_schedule)
    pause_schedule = _blocking(AsyncClient.pause_schedule)
    get = _blocking(AsyncClient.get)
    wait = _blocking(AsyncClient.wait)
    list = _blocking(AsyncClient.list)
    cluster = _blocking(AsyncClient.cluster)
    health = _blocking(AsyncClient.health)

    def iter_tasks(
        self, state: str | None = None, queue: str | None = None, page_size: int = 100
    ) -> Iterator[Task]:
        """Every matching task, oldest first, following the cursor page by page."""
        after: int | None = None
        while True:
            page = self.list(state, queue, page_size, after)
            yield from page["tasks"]
            if page.get("next") is None:
                return
            after = page["next"]
