"""`peer watch`: the peers of a cluster this process did not start, as the dashboard
sees them. Same face as `Launcher` (`PeerProcesses`), but it starts, stops and kills
nothing: the dashboard polls every peer of the config and says so when asked to kill
or restart one.
"""

from __future__ import annotations

from peer.config import ClusterConfig


class RemotePeers:
    def __init__(self, config: ClusterConfig) -> None:
        self.config = config

    def kill(self, node_id: int) -> int | None:
        raise OSError("watching only: these peers were not started here")

    def restart(self, node_id: int) -> int:
        raise OSError("watching only: these peers were not started here")

    def pid(self, node_id: int) -> int | None:
        return None

    def is_running(self, node_id: int) -> bool:
        return True  # unknown: poll it; the view says whether it answers

    def status(self, node_id: int) -> str:
        return "remote"

    def reap(self) -> list[tuple[int, int]]:
        return []
