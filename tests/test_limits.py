"""Limits that hold, in one process: args nesting and size, tasks per batch, `?wait=`,
result size, body size, open connections per client, long-poll waiters, and the head
timeout that ends a slow-loris connection.

The validation and the worker are driven directly; the rest against one in-process
peer (a `Node` leading alone, served by `HttpServer` on a free loopback port) with
small limits, so each bound is reached in a fraction of a second. Requests are raw
HTTP/1.1 over asyncio streams, so the test decides when each connection opens, what it
sends and when it closes. The same limits at their real values, against peer
processes, are in `test_processes_limits.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from peer.config import ClusterConfig, NodeAddress
from peer.protocol.messages import ResultItem
from peer.protocol.records import Task
from peer.registry import Registry
from peer.runtime import service
from peer.runtime.api import build_app
from peer.runtime.node import Node
from peer.runtime.server import ConnectionLimits, HttpServer
from peer.runtime.validation import (
    MAX_ARGS_BYTES,
    MAX_ARGS_DEPTH,
    MAX_BATCH_TASKS,
    BadRequest,
    check_batch,
    check_spec,
    check_wait,
    nesting,
)
from peer.runtime.worker import MAX_ERROR, MAX_RESULT, TaskRunner
from tests.harness import free_ports

HOST = "127.0.0.1"
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
BOUND = 5.0  # seconds any single wait of these tests may take at most


def nested(depth: int) -> Any:
    """`depth` levels of lists, built without recursion."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


# ------------------------------------------------------------------ validation


def test_args_may_nest_as_deep_as_the_limit_and_no_deeper() -> None:
    registry = Registry()
    assert check_spec({"kind": "echo", "args": nested(MAX_ARGS_DEPTH)}, registry)
    with pytest.raises(BadRequest) as refused:
        check_spec({"kind": "echo", "args": nested(MAX_ARGS_DEPTH + 1)}, registry)
    assert refused.value.field == "args"
    assert f"deeper than {MAX_ARGS_DEPTH} levels" in refused.value.reason


def test_nesting_is_counted_without_recursion_and_stops_past_the_limit() -> None:
    assert nesting(5, 3) == 0 and nesting({"a": [1, {"b": []}]}, 10) == 4
    assert nesting(nested(200_000), MAX_ARGS_DEPTH) == MAX_ARGS_DEPTH + 1


def test_args_over_the_size_limit_are_refused_naming_the_field() -> None:
    registry = Registry()
    fits = "x" * (MAX_ARGS_BYTES - 2)  # the two quotes make it exactly the limit
    assert check_spec({"kind": "echo", "args": fits}, registry)["args"] == fits
    with pytest.raises(BadRequest) as refused:
        check_spec({"kind": "echo", "args": fits + "x"}, registry)
    assert refused.value.field == "args"
    assert f"{MAX_ARGS_BYTES + 1} bytes as JSON, over the limit of {MAX_ARGS_BYTES}" in str(
        refused.value
    )


def test_a_batch_names_the_task_whose_args_are_over_a_limit() -> None:
    tasks = [{"kind": "echo"}, {"kind": "echo", "args": nested(MAX_ARGS_DEPTH + 1)}]
    with pytest.raises(BadRequest) as refused:
        check_batch({"tasks": tasks}, Registry())
    assert refused.value.field == "tasks[1].args"


def test_a_batch_over_the_task_limit_is_refused() -> None:
    assert check_batch({"tasks": [{"kind": "echo"}] * MAX_BATCH_TASKS}, Registry())
    with pytest.raises(BadRequest) as refused:
        check_batch({"tasks": [{"kind": "echo"}] * (MAX_BATCH_TASKS + 1)}, Registry())
    assert refused.value.field == "tasks"


def test_a_long_poll_may_wait_a_minute_at_most() -> None:
    assert check_wait("60") == 60.0
    for raw in ("60.5", "-1", "inf", "nan", "soon"):
        with pytest.raises(BadRequest) as refused:
            check_wait(raw)
        assert refused.value.field == "wait"


# ---------------------------------------------------------------------- worker


async def _run_attempt(result: Callable[[Any], Awaitable[Any]]) -> ResultItem:
    registry = Registry()
    registry.kinds["probe"] = result
    items: list[ResultItem] = []
    runner = TaskRunner(registry, 1, items.append)
    runner.start(Task(1, "probe", None, "default", 0, 1, None, (), None, 0.0, 0.0, attempt=1))
    async with asyncio.timeout(BOUND):
        while not items:
            await asyncio.sleep(0.01)
    await runner.close()
    return items[0]


def test_an_oversized_result_fails_the_attempt_saying_how_big() -> None:
    async def big(args: Any) -> Any:
        return "x" * MAX_RESULT

    item = asyncio.run(_run_attempt(big))
    assert not item.ok
    assert item.value == f"result too large: {MAX_RESULT + 2} bytes over {MAX_RESULT}"


def test_a_result_of_exactly_the_limit_is_kept() -> None:
    async def fits(args: Any) -> Any:
        return "x" * (MAX_RESULT - 2)

    item = asyncio.run(_run_attempt(fits))
    assert item.ok and len(item.value) == MAX_RESULT


def test_a_long_error_is_cut_to_the_limit() -> None:
    async def loud(args: Any) -> Any:
        raise RuntimeError("e" * (MAX_ERROR * 3))

    item = asyncio.run(_run_attempt(loud))
    assert not item.ok and len(item.value) < MAX_ERROR + 60
    assert item.value.endswith(f"({len('RuntimeError: ') + MAX_ERROR * 2} more characters)")


# ------------------------------------------------------------ one peer, in process


class Peer:
    def __init__(self, node: Node, http: HttpServer, port: int) -> None:
        self.node, self.http, self.port = node, http, port

    async def connect(self, source: str = HOST) -> Stream:
        return await asyncio.open_connection(HOST, self.port, local_addr=(source, 0))

    async def request(
        self, method: str, path: str, body: bytes = b"", source: str = HOST
    ) -> tuple[int, dict[str, str], Any]:
        reader, writer = await self.connect(source)
        try:
            writer.write(request_bytes(method, path, body))
            async with asyncio.timeout(BOUND):
                return parse_response(await reader.read())
        finally:
            await shut(writer)


async def shut(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def request_bytes(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: peer\r\nConnection: close\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def parse_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, orjson.loads(body) if body else None


@contextlib.asynccontextmanager
async def one_peer(
    tmp: Path, limits: ConnectionLimits, registry: Registry | None = None
) -> AsyncIterator[Peer]:
    [port] = free_ports(1)
    config = ClusterConfig(nodes=(NodeAddress(1, HOST, port),), data_dir=str(tmp))
    registry = registry or Registry()
    node = Node(config, 1, registry)
    http = HttpServer(build_app(node, registry), limits)
    await http.start(HOST, port)
    await node.start()
    try:
        async with asyncio.timeout(BOUND):
            while not node.core.is_ready_leader:
                await node.wait_changed(0.05)
        yield Peer(node, http, port)
    finally:
        await node.stop()
        await http.stop()


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """What the server sent before it closed the connection, within `within` seconds."""
    async with asyncio.timeout(within):
        return await reader.read()


def test_a_body_over_max_body_is_413_on_both_submit_routes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with one_peer(tmp_path, ConnectionLimits()) as peer:
            before = peer.node.core.log.last_index
            big = b'{"kind": "echo", "args": "' + b"x" * peer.node.config.max_body + b'"}'
            for path in ("/tasks", "/tasks/batch"):
                status, _, body = await peer.request("POST", path, big)
                assert status == 413 and body["error"]["code"] == "too_large", (path, body)
            deep = orjson.dumps({"kind": "echo", "args": nested(MAX_ARGS_DEPTH + 1)})
            status, headers, body = await peer.request("POST", "/tasks", deep)
            assert status == 400 and body["error"]["field"] == "args"
            assert headers["X-Error-Field"] == "args"
            assert peer.node.core.log.last_index == before and not peer.node.core.tasks.tasks

    asyncio.run(scenario())


def test_an_oversized_result_is_recorded_as_a_failed_attempt_not_replicated(
    tmp_path: Path,
) -> None:
    async def big(args: Any) -> Any:
        return "x" * (2 * MAX_RESULT)

    registry = Registry()
    registry.kinds["big"] = big

    async def scenario() -> None:
        async with one_peer(tmp_path, ConnectionLimits(), registry) as peer:
            body = orjson.dumps({"kind": "big", "max_attempts": 1})
            status, _, task = await peer.request("POST", "/tasks", body)
            assert status == 201
            status, _, task = await peer.request("GET", f"/tasks/{task['id']}?wait=4")
            assert task["state"] == "failed" and task["result"] is None
            size = 2 * MAX_RESULT + 2
            assert task["error"] == f"result too large: {size} bytes over {MAX_RESULT}"
            entries = peer.node.storage.load_log()[0].entries
            assert max(len(e.command) for e in entries) < 4096

    asyncio.run(scenario())


def test_connections_beyond_the_per_client_limit_are_refused_with_429(tmp_path: Path) -> None:
    limits = ConnectionLimits(per_client=3)

    async def scenario() -> None:
        async with one_peer(tmp_path, limits) as peer:
            held = [await peer.connect("127.0.0.2") for _ in range(3)]
            reader, writer = await peer.connect("127.0.0.2")
            status, headers, body = parse_response(await closed_by_server(reader, BOUND))
            await shut(writer)
            assert status == 429 and headers["Retry-After"] == "1"
            assert body["error"]["code"] == "too_many_connections"
            assert "127.0.0.2" in body["error"]["message"]
            status, _, _ = await peer.request("GET", "/health")  # another address: served
            assert status == 200 and peer.http.guard.open["127.0.0.2"] == 3
            held[0][1].write(request_bytes("GET", "/health"))  # a held one is served
            assert parse_response(await closed_by_server(held[0][0], BOUND))[0] == 200
            for _, w in held:
                await shut(w)
            async with asyncio.timeout(BOUND):  # closed ones free their places
                while "127.0.0.2" in peer.http.guard.open:
                    await asyncio.sleep(0.01)
            status, _, _ = await peer.request("GET", "/health", source="127.0.0.2")
            assert status == 200

    asyncio.run(scenario())


def test_a_slow_loris_head_is_cut_off_and_others_are_served_meanwhile(tmp_path: Path) -> None:
    limits = ConnectionLimits(header_timeout=0.6)
    head = request_bytes("GET", "/health")

    async def trickle(peer: Peer) -> float:
        """Send the head a byte every 0.1 s; seconds until the server closes."""
        reader, writer = await peer.connect()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with contextlib.suppress(ConnectionError):
            for byte in head[:-1]:
                writer.write(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        if await reader.read(1) == b"":
                            break  # closed by the server
        await shut(writer)
        return loop.time() - started

    async def scenario() -> None:
        async with one_peer(tmp_path, limits) as peer:
            slow = [asyncio.create_task(trickle(peer)) for _ in range(5)]
            loop = asyncio.get_running_loop()
            answered = []
            while not all(s.done() for s in slow):
                started = loop.time()
                status, _, _ = await peer.request("GET", "/health")
                answered.append((status, loop.time() - started))
                await asyncio.sleep(0.05)
            lasted = [await s for s in slow]
            assert all(0.5 <= t < 0.6 + 0.5 for t in lasted), lasted
            assert len(answered) >= 5 and all(s == 200 and t < 0.3 for s, t in answered)
            assert not peer.http.guard.open.get(HOST)  # every slow connection let go

    asyncio.run(scenario())


def test_a_head_sent_in_time_is_served_however_it_is_split(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with one_peer(tmp_path, ConnectionLimits(header_timeout=0.5)) as peer:
            reader, writer = await peer.connect()
            head = request_bytes("GET", "/health")
            for i in range(0, len(head), 8):  # the whole head in ~0.3 s
                writer.write(head[i : i + 8])
                await asyncio.sleep(0.03)
            status, _, body = parse_response(await closed_by_server(reader, BOUND))
            await shut(writer)
            assert status == 200 and body["ok"] is True

    asyncio.run(scenario())


def test_long_polls_beyond_the_limit_get_503_and_their_places_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "MAX_LONG_POLLS", 2)

    async def scenario() -> None:
        async with one_peer(tmp_path, ConnectionLimits()) as peer:
            body = orjson.dumps({"kind": "echo", "delay": 3600})
            _, _, task = await peer.request("POST", "/tasks", body)
            poll = f"/tasks/{task['id']}?wait=30"
            waiting = [asyncio.create_task(peer.request("GET", poll)) for _ in range(2)]
            async with asyncio.timeout(BOUND):
                while service.long_polls(peer.node) < 2:
                    await asyncio.sleep(0.01)
            status, headers, refused = await peer.request("GET", poll)
            assert status == 503 and headers["Retry-After"] == "1"
            assert refused["error"]["code"] == "too_many_waiters"
            assert not any(w.done() for w in waiting)
            status, _, _ = await peer.request("POST", f"/tasks/{task['id']}/cancel")
            assert status == 200
            async with asyncio.timeout(BOUND):
                answers = await asyncio.gather(*waiting)
            assert [a[2]["state"] for a in answers] == ["cancelled", "cancelled"]
            assert service.long_polls(peer.node) == 0
            status, _, done = await peer.request("GET", poll)  # terminal: no wait, no place
            assert status == 200 and done["state"] == "cancelled"

    asyncio.run(scenario())
