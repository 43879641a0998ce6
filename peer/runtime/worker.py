"""Running task attempts on this peer: the I/O side of execution.

`TaskRunner.start` runs an attempt's function from the registry (async functions on
the loop, sync ones in a thread pool), at most `slots` at once (attempts assigned
beyond that wait their turn here: the leader may hand a worker `slots x prefetch`
attempts of short kinds so the next ones are ready when a slot frees), bounded by the task's timeout
from when it starts running, and hands the outcome to `on_done` as a `ResultItem`.
A result that orjson cannot serialise, or whose JSON is over `MAX_RESULT` bytes (it
would be replicated to every peer's log), fails the attempt with a clear error; an
error's text is cut to `MAX_ERROR` characters. `stop` cancels an attempt (cancelled,
or ended elsewhere); a stopped attempt reports nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from peer.protocol.messages import ResultItem
from peer.protocol.records import Task
from peer.registry import Registry, TaskFailed

log = logging.getLogger(__name__)

MAX_RESULT = 1 << 20  # bytes of a result's JSON
MAX_ERROR = 4096  # characters of an attempt's error kept


class TaskRunner:
    def __init__(self, registry: Registry, slots: int, on_done: Callable[[ResultItem], None]):
        self.registry = registry
        self.on_done = on_done
        self._threads = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="task")
        self._slots = asyncio.Semaphore(slots)
        self._running: dict[tuple[int, int], asyncio.Task[None]] = {}  # held here
        self.executing = 0  # of those, the ones in a slot now

    @property
    def running(self) -> int:
        return self.executing

    def start(self, task: Task) -> None:
        key = (task.id, task.attempt)
        if key in self._running:
            return
        self._running[key] = asyncio.create_task(self._run(task), name=f"task-{task.id}")

    def stop(self, task_id: int, attempt: int) -> None:
        running = self._running.pop((task_id, attempt), None)
        if running is not None:
            running.cancel()

    async def _run(self, task: Task) -> None:
        key = (task.id, task.attempt)
        try:
            async with self._slots:
                self.executing += 1
                try:
                    async with asyncio.timeout(task.timeout):
                        value = await self._call(task.kind, _own_copy(task.args))
                finally:
                    self.executing -= 1
            item = ResultItem(task.id, task.attempt, True, _encode(value))
        except asyncio.CancelledError:
            if key not in self._running:
                return  # stopped on purpose: report nothing
            raise
        except TimeoutError:
            item = ResultItem(task.id, task.attempt, False, f"timeout after {task.timeout:g}s")
        except TaskFailed as exc:
            item = ResultItem(task.id, task.attempt, False, _cut(str(exc)))
        except Exception as exc:  # a task's own failure, whatever it is
            item = ResultItem(task.id, task.attempt, False, _cut(f"{type(exc).__name__}: {exc}"))
        if self._running.pop(key, None) is not None:
            self.on_done(item)

    async def _call(self, kind: str, args: Any) -> Any:
        """Run the kind's function on `args` (in a thread unless it is a coroutine)."""
        func = self.registry.kinds.get(kind)
        if func is None:
            raise TaskFailed(f"unknown task kind {kind!r} on this peer")
        if asyncio.iscoroutinefunction(func):
            return await func(args)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._threads, func, args)

    async def close(self) -> None:
        for running in list(self._running.values()):
            running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        self._threads.shutdown(wait=False, cancel_futures=True)


def _encode(value: Any) -> str:
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:
        raise TaskFailed(f"result is not JSON-serialisable: {exc}") from None
    if len(encoded) > MAX_RESULT:
        raise TaskFailed(f"result too large: {len(encoded)} bytes over {MAX_RESULT}")
    return encoded.decode()


def _cut(error: str) -> str:
    if len(error) <= MAX_ERROR:
        return error
    return f"{error[:MAX_ERROR]}... ({len(error) - MAX_ERROR} more characters)"


def _own_copy(args: Any) -> Any:
    """The task's arguments for its function to keep: a copy of a list or an object, so
    a function that changes what it was given cannot change the replicated table."""
    if args is None or isinstance(args, (str, int, float, bool)):
        return args
    return orjson.loads(orjson.dumps(args))
