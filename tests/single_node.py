"""A one-peer `Node` in this test's event loop, started and ready to lead: for tests of
the driver itself (its disk writes), without processes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from peer.config import ClusterConfig, NodeAddress
from peer.registry import Registry
from peer.runtime.node import Node
from tests.harness import free_ports


@contextlib.asynccontextmanager
async def ready_single_node(data_dir: Path) -> AsyncIterator[Node]:
    [port] = free_ports(1)
    config = ClusterConfig(nodes=(NodeAddress(1, "127.0.0.1", port),), data_dir=str(data_dir))
    node = Node(config, 1, Registry())
    await node.start()
    try:
        async with asyncio.timeout(10):
            while not node.core.is_ready_leader:
                await node.wait_changed(0.05)
        yield node
    finally:
        await node.stop()
