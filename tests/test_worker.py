"""The task runner and the registry, in-process: built-ins, user modules, sync and async
functions, failures, timeouts, unserialisable results and stops."""

from __future__ import annotations

import asyncio

import orjson

from peer.protocol.messages import ResultItem
from peer.protocol.records import Task
from peer.registry import Registry
from peer.runtime.worker import TaskRunner


def _task(task_id: int, kind: str, args: object, timeout: float | None = None) -> Task:
    return Task(task_id, kind, args, "default", 0, 3, timeout, (), None, 0.0, 0.0, attempt=1)


async def _run(registry: Registry, *tasks: Task, stop: int | None = None) -> list[ResultItem]:
    done: list[ResultItem] = []
    finished = asyncio.Event()
    runner = TaskRunner(registry, 2, lambda item: (done.append(item), finished.set()))
    for task in tasks:
        runner.start(task)
    if stop is not None:
        runner.stop(stop, 1)
    async with asyncio.timeout(10):
        while len(done) < len(tasks) - (stop is not None):
            finished.clear()
            await finished.wait()
    await runner.close()
    return sorted(done, key=lambda item: item.task)


def test_builtin_kinds_report_results_and_failures() -> None:
    registry = Registry()
    echo, fail = _task(1, "echo", {"a": 1}), _task(2, "fail", {"message": "boom"})
    ok, failed = asyncio.run(_run(registry, echo, fail))
    assert ok.ok and orjson.loads(ok.value) == {"a": 1}
    assert not failed.ok and failed.value == "boom"


def test_timeout_fails_the_attempt_with_a_clear_error() -> None:
    [item] = asyncio.run(_run(Registry(), _task(1, "sleep", {"seconds": 5}, timeout=0.05)))
    assert not item.ok and item.value.startswith("timeout")


def test_stopped_attempt_reports_nothing() -> None:
    quick, slow = _task(1, "echo", 1), _task(2, "sleep", {"seconds": 5})
    items = asyncio.run(_run(Registry(), quick, slow, stop=2))
    assert [i.task for i in items] == [1]


def test_user_module_sync_and_async_functions_run() -> None:
    registry = Registry(("examples.tasks",))
    assert {"word_count", "sha256", "countdown"} <= set(registry.kinds)
    words = _task(1, "word_count", {"text": "a b a"})
    count = _task(2, "countdown", {"n": 2, "pause": 0.01})
    bad = _task(3, "word_count", {"nope": 1})
    a, b, c = asyncio.run(_run(registry, words, count, bad))
    assert orjson.loads(a.value) == {"a": 2, "b": 1}
    assert orjson.loads(b.value) == [2, 1]
    assert not c.ok and "word_count needs" in c.value


def test_unserialisable_result_fails_with_a_clear_error() -> None:
    registry = Registry()
    registry.kinds["bad"] = lambda args: {1, 2}
    [item] = asyncio.run(_run(registry, _task(1, "bad", None)))
    assert not item.ok and "not JSON-serialisable" in item.value


def test_shell_is_refused_unless_allowed() -> None:
    assert "shell" not in Registry()
    assert "shell" in Registry(allow_shell=True)


def test_a_function_that_changes_its_arguments_leaves_the_task_record_alone() -> None:
    """(The record is the replicated table's: a snapshot kept of it must stay true.)"""

    def grab(args: dict[str, list[int]]) -> int:
        args["xs"].append(99)
        args["new"] = []
        return len(args["xs"])

    registry = Registry()
    registry.kinds["grab"] = grab
    task = _task(1, "grab", {"xs": [1, 2]})
    [item] = asyncio.run(_run(registry, task))
    assert item.ok and orjson.loads(item.value) == 3
    assert task.args == {"xs": [1, 2]}
