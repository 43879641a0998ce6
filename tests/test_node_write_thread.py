"""Where the driver writes: a small write on the loop's own thread, a big one on the disk
thread, and after an inline write that stalls the next ones on the disk thread, so the
loop is not held up by the disk for long (tests/test_write_placement.py has the rule).
Every proposal is applied either way."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from peer.protocol.commands import Submit, TaskSpec
from peer.runtime import node as node_module
from peer.runtime import write_placement
from tests.single_node import ready_single_node

PARKED = 3600.0  # the tasks wait: no attempt's writes (a finish) mix with the submits'


async def _scenario(tmp: Path) -> None:
    async with ready_single_node(tmp) as node:
        real_save = node.storage.save
        threads: list[tuple[str, int]] = []  # (what, thread ident) of each write
        stall = 0.0

        def watched_save(*args: object) -> None:
            entries = args[2]
            big = any(len(e.command) > 1000 for e in entries)  # type: ignore[attr-defined]
            threads.append(("big" if big else "small", threading.get_ident()))
            time.sleep(stall)
            real_save(*args)  # type: ignore[arg-type]

        node.storage.save = watched_save  # type: ignore[method-assign]
        loop_thread = threading.get_ident()
        async with asyncio.timeout(10):
            await node.propose(Submit(1.0, (TaskSpec("echo", delay=PARKED),)))
            assert threads and all(t == loop_thread for _, t in threads), threads

            threads.clear()
            big = TaskSpec(
                "echo", args=("x" * (node_module.INLINE_WRITE_CHARS + 10),), delay=PARKED
            )
            await node.propose(Submit(2.0, (big,)))
            assert ("big", loop_thread) not in threads, "a big write ran on the loop"
            assert any(what == "big" for what, _ in threads), threads

            threads.clear()
            stall = write_placement.STALLED * 1.5
            await node.propose(Submit(3.0, (TaskSpec("echo", delay=PARKED),)))  # stalls, inline
            stall = 0.0
            threads.clear()
            await node.propose(Submit(4.0, (TaskSpec("echo", delay=PARKED),)))
            assert threads and all(t != loop_thread for _, t in threads), (
                "a write after an inline one that stalled ran on the loop"
            )
        assert len(node.core.tasks.tasks) == 4


def test_small_writes_on_the_loop_big_and_after_a_slow_one_on_the_disk_thread(
    tmp_path: Path,
) -> None:
    asyncio.run(_scenario(tmp_path))
