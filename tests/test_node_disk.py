"""The driver against a failing disk: a write the disk refuses is never acknowledged,
nothing crashes, and everything completes once the disk takes writes again."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from peer.config import ClusterConfig, NodeAddress
from peer.protocol.commands import Submit, TaskSpec
from peer.registry import Registry
from peer.runtime.node import Node
from tests.harness import free_ports


async def _scenario(tmp: Path) -> None:
    [port] = free_ports(1)
    config = ClusterConfig(nodes=(NodeAddress(1, "127.0.0.1", port),), data_dir=str(tmp))
    node = Node(config, 1, Registry())
    await node.start()
    try:
        async with asyncio.timeout(10):
            while not node.core.is_ready_leader:
                await node.wait_changed(0.05)
        real_save = node.storage.save

        def full_disk(*args: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        node.storage.save = full_disk  # type: ignore[method-assign]
        command = Submit(1.0, (TaskSpec("echo"),))
        proposal = asyncio.create_task(node.propose(command))
        await asyncio.sleep(0.3)  # many driver cycles, each retrying the write
        assert not proposal.done(), "acknowledged a write the disk refused"
        assert node.disk_error and "full" in node.disk_error
        node.storage.save = real_save  # type: ignore[method-assign]
        async with asyncio.timeout(5):
            applied = await proposal
        assert applied.op == "submit" and node.disk_error is None
        entries, _ = node.storage.load_log()
        assert any('"submit"' in e.command for e in entries)
    finally:
        await node.stop()


def test_full_disk_holds_writes_back_until_it_recovers(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))
