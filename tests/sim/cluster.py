"""A whole cluster of real `PeerCore`s in one process, on a fake clock and network.

Virtual time advances in fixed steps; each step delivers due messages, ticks every
running peer, persists what it asks to persist (the "disk" survives crashes), then sends
what it produced. Invariants are checked after every step and raise `InvariantViolation`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from election import HardState, Role
from peer.core import PeerCore, Settings
from tests.sim.network import Faults, SimNetwork

STEP = 0.01


class InvariantViolation(AssertionError):
    pass


class SimCluster:
    def __init__(self, size: int, seed: int, faults: Faults | None = None) -> None:
        self.ids = tuple(range(1, size + 1))
        self.majority = size // 2 + 1
        self.rng = random.Random(seed)
        self.settings = Settings()
        self.net = SimNetwork(self.rng, faults)
        self.now = 0.0
        self.disk: dict[int, HardState] = {}
        self.incarnation: dict[int, int] = dict.fromkeys(self.ids, 0)
        self.nodes: dict[int, PeerCore] = {}
        self.leaders_by_term: dict[int, int] = {}
        self.minority_since: dict[int, float] = {}
        self.last_term: dict[int, int] = dict.fromkeys(self.ids, 0)
        for node_id in self.ids:
            self.start(node_id)

    # ------------------------------------------------------------------ faults

    def start(self, node_id: int) -> None:
        self.incarnation[node_id] += 1
        self.nodes[node_id] = PeerCore(
            node_id,
            self.ids,
            self.settings,
            random.Random(self.rng.random()),
            self.disk.get(node_id),
            self.incarnation[node_id],
        )

    def crash(self, node_id: int) -> None:
        self.nodes.pop(node_id, None)

    @property
    def up(self) -> list[int]:
        return sorted(self.nodes)

    # ------------------------------------------------------------------- time

    def step(self) -> None:
        self.now = round(self.now + STEP, 6)
        for src, dst, message in self.net.due(self.now):
            node = self.nodes.get(dst)
            if node is not None:
                node.receive(self.now, message)
                self._flush(dst)
        for node_id in self.up:
            self.nodes[node_id].tick(self.now)
            self._flush(node_id)
        self.check_invariants()

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP)):
            self.step()

    def run_until(self, condition, seconds: float) -> bool:  # type: ignore[no-untyped-def]
        for _ in range(round(seconds / STEP)):
            if condition():
                return True
            self.step()
        return bool(condition())

    def _flush(self, node_id: int) -> None:
        batch = self.nodes[node_id].ready()
        if batch.hard_state is not None:
            self.disk[node_id] = batch.hard_state  # persisted before anything is sent
        for to, message in batch.messages:
            self.net.send(self.now, node_id, to, message)

    # ------------------------------------------------------------- invariants

    def leaders(self) -> list[int]:
        return [i for i, n in self.nodes.items() if n.role is Role.LEADER]

    def component(self, node_id: int) -> set[int]:
        """Running peers reachable from `node_id` over uncut links (both directions)."""
        return {p for p in self.up if p == node_id or self.net.connected(node_id, p)}

    def check_invariants(self) -> None:
        for node_id, node in self.nodes.items():
            term = node.election.term
            if term < self.last_term[node_id]:
                raise InvariantViolation(f"t={self.now}: peer {node_id} term went backwards")
            self.last_term[node_id] = term
        for leader in self.leaders():
            term = self.nodes[leader].election.term
            holder = self.leaders_by_term.setdefault(term, leader)
            if holder != leader:
                raise InvariantViolation(
                    f"t={self.now}: two leaders in term {term}: {holder} and {leader}"
                )
        self._check_minority_has_no_leader()

    def _check_minority_has_no_leader(self) -> None:
        grace = self.settings.failure_timeout + 3 * self.settings.heartbeat_interval
        for node_id in self.up:
            if len(self.component(node_id)) >= self.majority:
                self.minority_since.pop(node_id, None)
                continue
            since = self.minority_since.setdefault(node_id, self.now)
            if self.nodes[node_id].role is Role.LEADER and self.now - since > grace:
                raise InvariantViolation(
                    f"t={self.now}: peer {node_id} leads from a minority since t={since}"
                )

    def agreed_on_highest(self, among: Iterable[int] | None = None) -> bool:
        """Every running peer follows the highest running id, which leads."""
        live = sorted(among if among is not None else self.up)
        if len(live) < self.majority:
            return not self.leaders()
        top = live[-1]
        if self.nodes[top].role is not Role.LEADER:
            return False
        return all(self.nodes[p].leader == top for p in live)
