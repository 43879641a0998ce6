"""Vote counting: who has granted a claim, and whether that is a majority."""

from __future__ import annotations

from collections.abc import Iterable


class Quorum:
    """Grants for one round (a term); `won` once a strict majority of `peers` granted."""

    def __init__(self, peers: Iterable[int]) -> None:
        self.peers = frozenset(peers)
        self.size = len(self.peers) // 2 + 1
        self.round = 0
        self.granted: set[int] = set()

    def set_peers(self, peers: Iterable[int]) -> None:
        """The voters changed: grants from peers no longer among them stop counting."""
        self.peers = frozenset(peers)
        self.size = len(self.peers) // 2 + 1
        self.granted &= self.peers

    def reset(self, round_: int) -> None:
        self.round = round_
        self.granted = set()

    def grant(self, peer: int) -> None:
        if peer in self.peers:
            self.granted.add(peer)

    def won(self) -> bool:
        return len(self.granted) >= self.size
