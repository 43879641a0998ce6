"""The driver against a failing disk: a write the disk refuses is never acknowledged
(its proposal hears `DiskRefused`, and so does every new one), nothing crashes, and
the refused entry is written and applied once the disk takes writes again."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from peer.protocol.commands import Submit, TaskSpec
from peer.runtime.node import DiskRefused
from tests.single_node import ready_single_node


async def _scenario(tmp: Path) -> None:
    async with ready_single_node(tmp) as node:
        real_save = node.storage.save

        def full_disk(*args: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        node.storage.save = full_disk  # type: ignore[method-assign]
        command = Submit(1.0, (TaskSpec("echo"),))
        async with asyncio.timeout(5):
            with pytest.raises(DiskRefused) as refused:
                await node.propose(command)
        assert refused.value.proposed, "the entry was in the log when the disk refused"
        assert node.disk_error and "full" in node.disk_error
        await asyncio.sleep(0.3)  # many driver cycles, each retrying the write
        assert len(node.core.tasks.tasks) == 0, "applied a write the disk refused"
        with pytest.raises(DiskRefused) as at_once:
            await node.propose(Submit(2.0, (TaskSpec("echo"),)))
        assert not at_once.value.proposed
        node.storage.save = real_save  # type: ignore[method-assign]
        async with asyncio.timeout(5):
            while not node.core.tasks.tasks:
                await node.wait_changed(0.05)
        assert node.disk_error is None and len(node.core.tasks.tasks) == 1
        entries = node.storage.load_log()[0].entries
        assert any('"submit"' in e.command for e in entries)


def test_full_disk_holds_writes_back_until_it_recovers(tmp_path: Path) -> None:
    asyncio.run(_scenario(tmp_path))
