"""Ring 3: the Python client and the `peer` command line against real peer processes.

Tasks here are submitted with a long `delay`, so they stay `scheduled` and never run:
`wait` is checked with a short timeout (it answers the task as it is) and with a cancel
(which makes it terminal).
The client talks to a follower, so every write here is forwarded to the leader.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import orjson
import pytest

from peer.client import AsyncClient, Client, ClientError
from tests.conftest import ClusterFactory
from tests.harness import PROJECT_ROOT, Cluster

START_TIMEOUT = 15.0  # cold start of three Python processes on a busy box, then election
CLI_TIMEOUT = 30.0  # one `python -m peer ...` run, imports included
LATER = 3600  # seconds of delay: the tasks here stay scheduled and never run


def _started(cluster_factory: ClusterFactory) -> tuple[Cluster, int, int]:
    """A three-peer cluster with an agreed leader: (cluster, leader, a follower)."""
    cluster = cluster_factory(3)
    # the highest id: a lower one may lead for a moment before the last peer is up
    leader = cluster.wait_for_leader(expected=max(cluster.ids), timeout=START_TIMEOUT)
    follower = min(n for n in cluster.ids if n != leader)
    return cluster, leader, follower


async def _check_submit_get_list(client: AsyncClient) -> list[dict[str, Any]]:
    first = await client.submit("echo", {"n": 0}, queue="q1", priority=5, delay=LATER)
    assert first["state"] == "scheduled" and first["queue"] == "q1" and first["priority"] == 5
    assert first["key"], "the client always sends an idempotency key"
    assert await client.get(first["id"]) == first
    rest = [await client.submit("echo", {"n": n}, queue="q1", delay=LATER) for n in range(1, 5)]
    await client.get(rest[-1]["id"])  # now the follower has applied every submit
    page = await client.list(queue="q1", limit=2)
    assert [t["id"] for t in page["tasks"]] == [first["id"], rest[0]["id"]]
    assert page["next"] is not None
    walked = [t["id"] async for t in client.iter_tasks(queue="q1", page_size=2)]
    assert walked == [t["id"] for t in [first, *rest]]
    return [first, *rest]


async def _check_wait_and_cancel(client: AsyncClient, task_id: int) -> None:
    started = time.monotonic()
    still = await client.wait(task_id, timeout=0.3)
    assert still["state"] == "scheduled", "a short wait answers the non-terminal task"
    assert time.monotonic() - started < 5.0
    waiter = asyncio.create_task(client.wait(task_id, timeout=20.0))
    cancelled = await client.cancel(task_id)
    assert cancelled["state"] == "cancelled"
    done = await asyncio.wait_for(waiter, timeout=10.0)  # woken by the cancel, not the timeout
    assert done["id"] == task_id and done["state"] == "cancelled"
    with pytest.raises(ClientError) as refused:
        await client.cancel(task_id)
    assert refused.value.status == 409 and refused.value.code == "conflict"


async def _check_batch_and_keys(client: AsyncClient) -> None:
    batch = await client.submit_batch(
        [
            {"kind": "echo", "ref": "a", "delay": LATER},
            {"kind": "echo", "after": ["a"], "key": "batch-b"},
        ]
    )
    assert len(batch) == 2 and batch[1]["key"] == "batch-b" and batch[0]["key"]
    assert batch[1]["depends_on"] == [batch[0]["id"]] and batch[1]["state"] == "blocked"
    once = await client.submit("echo", {"x": 1}, key="retried-key")
    again = await client.submit("echo", {"x": 1}, key="retried-key")
    assert again["id"] == once["id"], "a retried submit with the same key is the same task"
    await client.get(again["id"])
    total = [t async for t in client.iter_tasks()]
    assert [t["key"] for t in total].count("retried-key") == 1


async def _check_refusals(client: AsyncClient) -> None:
    with pytest.raises(ClientError) as bad:
        await client.submit("no-such-kind")
    assert bad.value.status == 400 and bad.value.code == "bad_request"
    assert "kind" in bad.value.message
    with pytest.raises(ClientError) as too_high:
        await client.submit("echo", priority=10**9, key="refused-key")
    assert too_high.value.status == 400 and "priority" in too_high.value.message
    assert not [t async for t in client.iter_tasks() if t["key"] == "refused-key"]
    with pytest.raises(ClientError) as unknown:
        await client.get(10**9)
    assert unknown.value.status == 404 and unknown.value.code == "not_found"


def test_async_client_reads_and_writes_through_a_follower(
    cluster_factory: ClusterFactory,
) -> None:
    cluster, _, follower = _started(cluster_factory)

    async def scenario() -> None:
        async with AsyncClient(cluster.url(follower), timeout=5.0) as client:
            assert (await client.health(ready=True))["ok"] is True
            tasks = await _check_submit_get_list(client)
            await _check_wait_and_cancel(client, tasks[0]["id"])
            await _check_batch_and_keys(client)
            await _check_refusals(client)

    asyncio.run(scenario())


def test_sync_client_rotates_past_a_dead_first_peer(cluster_factory: ClusterFactory) -> None:
    cluster, leader, follower = _started(cluster_factory)
    cluster.kill(follower)
    others = [cluster.url(n) for n in cluster.ids if n != follower]
    with Client([cluster.url(follower), *others], timeout=2.0, retry_time=10.0) as client:
        task = client.submit("echo", {"after": "kill"})
        assert client.peer != cluster.url(follower), "the client moved on to a live peer"
        assert client.get(task["id"])["id"] == task["id"]
        assert [t["id"] for t in client.iter_tasks()] == [task["id"]]
    with Client(cluster.url(leader)) as at_leader:
        assert at_leader.get(task["id"])["args"] == {"after": "kill"}


def _cli(*commands: list[str], env: dict[str, str] | None = None) -> list[tuple[int, str, str]]:
    """Run `python -m peer ARGV` for each argv at once; (exit code, stdout, stderr) of each."""
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "peer", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=PROJECT_ROOT,
            env={**os.environ, **(env or {})},
        )
        for argv in commands
    ]
    results = []
    for run in runs:
        try:
            out, err = run.communicate(timeout=CLI_TIMEOUT)
        finally:
            run.kill()  # no-op once it has exited; never leave one behind on a timeout
        results.append((run.wait(), out, err))
    return results


def _json_of(result: tuple[int, str, str]) -> Any:
    code, out, err = result
    assert code == 0, err
    return orjson.loads(out)


def test_cli_commands_print_json_and_exit_codes(cluster_factory: ClusterFactory) -> None:
    cluster, leader, follower = _started(cluster_factory)
    peer = cluster.url(follower)

    args = '{"hello": "cli"}'
    [submitted] = _cli(
        ["submit", "echo", "--args", args, "--delay", str(LATER), "--peer", peer, "--json"]
    )
    task = _json_of(submitted)
    assert task["kind"] == "echo" and task["args"] == {"hello": "cli"}
    assert task["state"] == "scheduled" and task["key"]
    # A follower applies a forwarded write up to a heartbeat after the leader answered it.
    cluster.wait_for(
        lambda: (cluster.request(follower, "GET", f"/tasks/{task['id']}") or (0,))[0] == 200,
        timeout=5.0,
        what=f"peer {follower} to apply task {task['id']}",
    )

    shown, page, view, refused = _cli(
        ["task", str(task["id"]), "--peer", peer, "--wait", "0.2", "--json"],
        ["tasks", "--state", "scheduled", "--peer", peer, "--json"],
        ["status", "--json"],  # the peer comes from $PEER_URL
        ["submit", "no-such-kind", "--peer", peer],
        env={"PEER_URL": peer},
    )
    assert _json_of(shown)["id"] == task["id"] and _json_of(shown)["state"] == "scheduled"
    listed = _json_of(page)
    assert [t["id"] for t in listed["tasks"]] == [task["id"]] and listed["next"] is None
    cluster_view = _json_of(view)
    assert cluster_view["id"] == follower and cluster_view["leader"] == leader
    assert {m["id"] for m in cluster_view["members"]} == set(cluster.ids)
    assert cluster_view["tasks"]["scheduled"] == 1
    assert refused[0] == 1, refused
    assert refused[2].startswith("error: 400 bad_request: kind: unknown task kind"), refused

    # membership: a learner added (never started, so never promoted: --wait 0) and removed
    [added, table] = _cli(
        ["members", "add", "4", "127.0.0.1:9", "--wait", "0", "--peer", peer, "--json"],
        ["members", "--peer", peer],
    )
    config = _json_of(added)
    assert [m["id"] for m in config["learners"]] == [4], config
    assert config["learners"][0]["url"] == "http://127.0.0.1:9"
    assert table[0] == 0 and "members" in table[1], table
    [again, removed] = _cli(
        ["members", "add", "2", "127.0.0.1:9", "--peer", peer],
        ["members", "remove", "4", "--peer", peer, "--json"],
    )
    assert again[0] == 1 and "409 conflict: peer 2 is already a member" in again[2], again
    assert _json_of(removed)["learners"] == []


def test_cli_schedule_commands_add_list_show_pause_resume_and_remove(
    cluster_factory: ClusterFactory,
) -> None:
    cluster, _, follower = _started(cluster_factory)
    peer = ["--peer", cluster.url(follower)]
    hourly = ["schedule", "add", "hourly", "--every", "3600", "echo", "--args", '{"hi": 1}']
    [(code, out, err)] = _cli([*hourly, *peer, "--json"])
    assert code == 0, err
    added = _json_of((code, out, err))
    assert added["name"] == "hourly" and added["every"] == 3600.0 and added["fired"] == 0
    assert added["task"] == {"kind": "echo", "args": {"hi": 1}}
    listed, shown, table = _cli(
        ["schedule", "list", *peer, "--json"],
        ["schedule", "show", "hourly", *peer, "--json"],
        ["schedule", "list", *peer],
        env={"COLUMNS": "200"},  # one line per row
    )
    assert [s["name"] for s in _json_of(listed)] == ["hourly"]
    assert _json_of(shown)["next_due"] == added["next_due"]
    assert "hourly" in table[1] and "every 3600s" in table[1], table
    [paused] = _cli(["schedule", "pause", "hourly", *peer, "--json"])
    assert _json_of(paused)["paused"] is True
    [resumed] = _cli(["schedule", "resume", "hourly", *peer, "--json"])
    assert _json_of(resumed)["paused"] is False
    [conflict] = _cli([*hourly[:4], "60", *hourly[5:], *peer])
    assert conflict[0] == 1 and "409 conflict" in conflict[2], conflict
    [removed] = _cli(["schedule", "rm", "hourly", *peer, "--json"])
    assert _json_of(removed) == {"deleted": "hourly"}
    [missing] = _cli(["schedule", "show", "hourly", *peer])
    assert missing[0] == 1 and "404" in missing[2], missing
