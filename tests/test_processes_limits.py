"""Ring 3: the limits of a peer process at their real values, through its public API.

Oversized input (body, args depth and size, tasks per batch, `?wait=`) is refused and
changes nothing; connections per client address and long-poll waiters are bounded; a
slow-loris client (headers one byte a second) is cut off after `HEADER_TIMEOUT` while
others are served at once; and a full disk — a real 2 MiB tmpfs under the peer's data
directory, skipped where it cannot be mounted — turns writes into 503 `disk_full`,
never corrupts the log, and the peer recovers when space returns. Clients come from
several loopback addresses (127.0.0.2 and up), so one client's limit is reached while
the harness (127.0.0.1) still gets through.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from peer.runtime.server import MAX_CONNECTIONS_PER_CLIENT
from peer.runtime.service import MAX_LONG_POLLS
from peer.runtime.validation import MAX_ARGS_BYTES, MAX_ARGS_DEPTH, MAX_BATCH_TASKS
from tests.chaos import START_TIMEOUT, request_once
from tests.conftest import ClusterFactory
from tests.harness import Cluster
from tests.test_limits import nested, parse_response, request_bytes

pytestmark = pytest.mark.processes

BOUND = 10.0  # seconds any single wait here may take at most
HEADER_TIMEOUT = 2.0  # the slow-loris test's header_timeout (the default is 5 s)
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def started(cluster_factory: ClusterFactory, **overrides: Any) -> Cluster:
    cluster = cluster_factory(1, **overrides)
    cluster.wait_for_leader(timeout=START_TIMEOUT)
    return cluster


def marks(cluster: Cluster) -> tuple[int, int]:
    view = cluster.view(1)
    assert view is not None
    return view["last_index"], view["commit_index"]


def post(cluster: Cluster, path: str, data: Any) -> tuple[int, Any]:
    status, body = request_once(cluster, 1, "POST", path, orjson.dumps(data))
    return status, json.loads(body) if body else None


async def connect(cluster: Cluster, source: str) -> Stream:
    node = cluster.config.node(1)
    return await asyncio.open_connection(node.host, node.port, local_addr=(source, 0))


async def shut(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def ask(cluster: Cluster, method: str, path: str, source: str = "127.0.0.1") -> Any:
    """One request on a new connection: (status, headers, body) within BOUND seconds."""
    reader, writer = await connect(cluster, source)
    try:
        writer.write(request_bytes(method, path))
        async with asyncio.timeout(BOUND):
            return parse_response(await reader.read())
    finally:
        await shut(writer)


# ------------------------------------------------------------------ bad input


def test_oversized_input_is_refused_naming_the_field_and_changes_nothing(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = started(cluster_factory)
    before = marks(cluster)
    body = b'{"kind": "echo", "args": "' + b"x" * cluster.config.max_body + b'"}'
    for path in ("/tasks", "/tasks/batch"):
        status, answer = request_once(cluster, 1, "POST", path, body)
        assert status == 413 and json.loads(answer)["error"]["code"] == "too_large", path
    refusals = [
        ("/tasks", {"kind": "echo", "args": nested(MAX_ARGS_DEPTH + 1)}, "args"),
        ("/tasks", {"kind": "echo", "args": "x" * MAX_ARGS_BYTES}, "args"),
        ("/tasks/batch", {"tasks": [{"kind": "echo", "args": nested(40)}]}, "tasks[0].args"),
        ("/tasks/batch", {"tasks": [{"kind": "echo"}] * (MAX_BATCH_TASKS + 1)}, "tasks"),
    ]
    for path, data, field in refusals:
        status, answer = post(cluster, path, data)
        assert status == 400 and answer["error"]["field"] == field, (path, field, answer)
    status, answer = request_once(cluster, 1, "GET", "/tasks/1?wait=61")
    assert status == 400 and json.loads(answer)["error"]["field"] == "wait"
    assert marks(cluster) == before
    status, listing = request_once(cluster, 1, "GET", "/tasks")
    assert status == 200 and json.loads(listing)["tasks"] == []


# ------------------------------------------------------ connections and waiters


def test_connections_per_client_and_long_poll_waiters_are_bounded(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = started(cluster_factory)
    status, task = post(cluster, "/tasks", {"kind": "echo", "delay": 3600})
    assert status == 201
    asyncio.run(_connections_and_waiters(cluster, task["id"]))


async def _connections_and_waiters(cluster: Cluster, task_id: int) -> None:
    held = [await connect(cluster, "127.0.0.2") for _ in range(MAX_CONNECTIONS_PER_CLIENT)]
    try:
        reader, writer = await connect(cluster, "127.0.0.2")
        async with asyncio.timeout(BOUND):
            status, headers, body = parse_response(await reader.read())
        await shut(writer)
        assert status == 429 and body["error"]["code"] == "too_many_connections"
        assert headers["Retry-After"] == "1"
        assert (await ask(cluster, "GET", "/health"))[0] == 200  # other clients: served
        held_reader, held_writer = held[-1]
        held_writer.write(request_bytes("GET", "/health"))  # an admitted one: served
        async with asyncio.timeout(BOUND):
            assert parse_response(await held_reader.read())[0] == 200
    finally:
        for _, w in held:
            await shut(w)
    await _waiters(cluster, task_id)


async def _waiters(cluster: Cluster, task_id: int) -> None:
    per_source = MAX_CONNECTIONS_PER_CLIENT - 4
    sources = [f"127.0.0.{3 + i // per_source}" for i in range(MAX_LONG_POLLS)]
    poll = request_bytes("GET", f"/tasks/{task_id}?wait=30")
    streams = [await connect(cluster, s) for s in sources]  # one by one: no backlog overflow
    for _, writer in streams:
        writer.write(poll)
    waiting = [asyncio.create_task(answer(reader)) for reader, _ in streams]
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BOUND
        while True:  # once every waiter is in, one more is refused
            status, headers, body = await ask(cluster, "GET", f"/tasks/{task_id}?wait=0.3")
            if status == 503 or loop.time() > deadline:
                break
        assert status == 503 and body["error"]["code"] == "too_many_waiters", body
        assert headers["Retry-After"] == "1"
        assert not any(w.done() for w in waiting)
        assert (await ask(cluster, "GET", f"/tasks/{task_id}"))[0] == 200  # no wait: served
        assert post(cluster, f"/tasks/{task_id}/cancel", {})[0] == 200
        async with asyncio.timeout(BOUND):
            answers = await asyncio.gather(*waiting)
        assert {(a[0], a[2]["state"]) for a in answers} == {(200, "cancelled")}
    finally:
        for w in waiting:
            w.cancel()
        for _, writer in streams:
            await shut(writer)


async def answer(reader: asyncio.StreamReader) -> Any:
    async with asyncio.timeout(60):  # (the test's own waits are shorter and fail first)
        return parse_response(await reader.read())


# ------------------------------------------------------------------ slow-loris


def test_a_slow_loris_client_is_cut_off_and_does_not_stall_others(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = started(cluster_factory, header_timeout=HEADER_TIMEOUT)  # set in cluster.toml
    lasted, answered = asyncio.run(_slow_loris(cluster, sockets=8))
    assert all(HEADER_TIMEOUT - 0.5 <= t <= HEADER_TIMEOUT + 1.5 for t in lasted), lasted
    slowest = max(t for _, t in answered)
    assert len(answered) >= 10 and {s for s, _ in answered} == {200}
    assert slowest < 0.5, f"a request took {slowest:.2f}s while slow-loris clients were on"


async def _slow_loris(cluster: Cluster, sockets: int) -> tuple[list[float], list[Any]]:
    loop = asyncio.get_running_loop()
    head = request_bytes("GET", "/health")

    async def trickle() -> float:
        """A byte a second; the seconds from the first byte until the server closes."""
        reader, writer = await connect(cluster, "127.0.0.2")
        first = loop.time()
        with contextlib.suppress(ConnectionError):
            for byte in head[:-1]:
                writer.write(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        if await reader.read(1) == b"":
                            break
                if loop.time() - first > HEADER_TIMEOUT + 3:
                    break  # not cut off: the assertion on the times fails
        await shut(writer)
        return loop.time() - first

    slow = [asyncio.create_task(trickle()) for _ in range(sockets)]
    answered = []
    while not all(s.done() for s in slow):
        began = loop.time()
        status = (await ask(cluster, "GET", "/health"))[0]
        answered.append((status, loop.time() - began))
        await asyncio.sleep(0.2)
    return [await s for s in slow], answered


# ------------------------------------------------------------------- full disk


@contextlib.contextmanager
def tiny_filesystem(where: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where`; skips the test where mounting is refused."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs to fill: {exc}")
    if mounted.returncode != 0:
        reason = mounted.stderr.decode(errors="replace").strip()
        pytest.skip(f"cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): {reason}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


def fill(directory: Path) -> Path:
    """A file that takes every free byte of `directory`'s filesystem."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as out:
        chunk = b"\0" * 65536
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                chunk = chunk[: len(chunk) // 2]
                if not chunk:
                    return filler


def test_a_full_disk_turns_writes_into_503_and_the_log_survives(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(1, start=False)
    with tiny_filesystem(cluster.config.node_dir(1)) as disk:
        cluster.start_all()
        try:
            _full_disk(cluster, disk)
        finally:
            cluster.stop_all()


def _submit(cluster: Cluster, key: str, args: Any = None) -> tuple[int, Any, float]:
    body = orjson.dumps({"kind": "echo", "args": args, "key": key})
    began = time.monotonic()
    status, answer = request_once(cluster, 1, "POST", "/tasks", body)
    return status, json.loads(answer), time.monotonic() - began


def _full_disk(cluster: Cluster, disk: Path) -> None:
    cluster.wait_for_leader(timeout=START_TIMEOUT)
    acked: dict[str, int] = {}
    for i in range(5):
        status, task, _ = _submit(cluster, f"before-{i}")
        assert status == 201
        acked[f"before-{i}"] = task["id"]
    filler = fill(disk)
    refused: list[Any] = []
    for i in range(200):  # SQLite's WAL may still have room for a few
        status, answer, _ = _submit(cluster, f"full-{i}", "y" * 16384)
        if status != 201:
            refused.append((status, answer, f"full-{i}"))
            break
        acked[f"full-{i}"] = answer["id"]
    assert refused, "the disk never filled"
    status, answer, refused_key = refused[0]
    assert status == 503 and answer["error"]["code"] == "disk_full", answer
    for _ in range(3):  # while full: refused at once, nothing changed
        status, answer, took = _submit(cluster, "while-full")
        assert status == 503 and answer["error"]["code"] == "disk_full" and took < 1.0
        assert "nothing was changed" in answer["error"]["message"]
    assert request_once(cluster, 1, "GET", "/tasks?limit=5")[0] == 200  # reads still work
    filler.unlink()

    def accepted() -> int:
        status, answer, _ = _submit(cluster, "after")
        return int(answer["id"]) if status in (200, 201) else 0

    acked["after"] = cluster.wait_for(accepted, BOUND, "writes accepted once space returns")
    status, again, _ = _submit(cluster, refused_key, "y" * 16384)  # "retry with its key"
    assert status in (200, 201)
    acked[refused_key] = again["id"]
    _check_acked(cluster, acked)
    cluster.stop(1)
    db = sqlite3.connect(cluster.config.node_dir(1) / "state.sqlite3")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()
    cluster.start(1)
    cluster.wait_for_leader(timeout=START_TIMEOUT)
    _check_acked(cluster, acked)
    status, answer, _ = _submit(cluster, "after-restart")
    assert status == 201


def _check_acked(cluster: Cluster, acked: dict[str, int]) -> None:
    """Every acknowledged task is there under its id, and no key is there twice."""
    status, listing = request_once(cluster, 1, "GET", "/tasks?limit=1000")
    keys = [t["key"] for t in json.loads(listing)["tasks"]]
    assert status == 200 and len(keys) == len(set(keys)) == len(acked), keys
    for key, task_id in acked.items():
        status, body = request_once(cluster, 1, "GET", f"/tasks/{task_id}")
        assert status == 200 and json.loads(body)["key"] == key, (key, task_id, body)
