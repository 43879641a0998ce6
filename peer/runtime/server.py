"""Runs one peer: the driver and its HTTP server, until SIGINT or SIGTERM, on uvloop
where it is installed (its event loop costs a fraction of asyncio's per wake-up, which
is most of what an idle peer spends) and on asyncio's own loop elsewhere."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from peer.config import ClusterConfig
from peer.registry import Registry
from peer.runtime.api import build_app
from peer.runtime.logs import PeerContext
from peer.runtime.node import Node

log = logging.getLogger(__name__)


def run(config: ClusterConfig, node_id: int, logs: PeerContext | None = None) -> None:
    try:
        import uvloop
    except ImportError:  # not on this platform: the standard loop works the same
        asyncio.run(serve(config, node_id, logs))
    else:
        uvloop.run(serve(config, node_id, logs))


async def serve(config: ClusterConfig, node_id: int, logs: PeerContext | None = None) -> None:
    registry = Registry(config.task_modules, config.allow_shell)
    node = Node(config, node_id, registry)
    if logs is not None:
        logs.term = lambda: node.core.term
    runner = web.AppRunner(build_app(node, registry), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, node.address.host, node.address.port, reuse_address=True)
    await site.start()
    await node.start()
    log.info("peer %s serving on %s (incarnation %s)", node_id, node.address.url, node.incarnation)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("peer %s stopping", node_id)
    await node.stop()
    await runner.cleanup()
