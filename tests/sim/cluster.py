"""A whole cluster of real `PeerCore`s in one process, on a fake clock and network.

Virtual time advances in fixed steps; each step delivers due messages, ticks the
running peers, persists what they ask to persist (the "disk" survives crashes), then
sends what they produced. With `lazy_ticks` (the default) a peer is driven as the real
driver drives it: it runs a cycle (`ready`) only for a delivery it needs at once
(`needs_cycle`; other messages wait, with their arrival time, for its next cycle), a
finished task, or a tick, and it is ticked when its `next_tick` has come or along with a
delivery half a heartbeat after its last tick. Otherwise every step ticks every peer
and every message is taken at once. Clients may propose commands to
whichever peer is a ready leader; a command is acknowledged when that leader applies it
in the term it proposed it.
Invariants are checked after every step and raise `InvariantViolation`.

With `execute=True` the peers also run the tasks they are assigned: each start in a
peer's batch completes after a random virtual delay by `complete` on that same peer,
unless the peer crashed first (its running attempts are lost) or a stop in a later batch
cancelled it. Kinds: `echo` succeeds with its args as JSON; `sleep` succeeds after
`args["seconds"]`; `fail` fails with a message.
Every finish that takes effect on any peer is recorded per (task, attempt).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from election import HardState, Role
from peer.protocol.core import CoreReady, PeerCore, Settings
from peer.protocol.execution import ResultItem
from peer.protocol.log import Entry, Log
from peer.protocol.tasks import Applied, Task
from tests.sim.network import Faults, SimNetwork

STEP = 0.01
RUN_TIME = (0.01, 0.3)  # virtual seconds an executed task runs, uniformly


class InvariantViolation(AssertionError):
    pass


def echo_task(n: int) -> dict[str, Any]:
    return {"kind": "echo", "args": n}


class SimCluster:
    def __init__(
        self,
        size: int,
        seed: int,
        faults: Faults | None = None,
        settings: Settings | None = None,
        execute: bool = False,
        lazy_ticks: bool = True,
    ) -> None:
        self.ids = tuple(range(1, size + 1))
        self.lazy_ticks = lazy_ticks
        self.last_tick: dict[int, float] = {}
        self.held: dict[int, list[tuple[float, Any]]] = {}  # messages waiting for a cycle
        self.majority = size // 2 + 1
        self.rng = random.Random(seed)
        self.settings = settings or Settings()
        self.execute = execute
        self.make_task: Callable[[int], dict[str, Any]] = echo_task  # spec of proposal n
        self.work: dict[int, dict[tuple[int, int], tuple[float, ResultItem]]] = {}
        self.outcomes: dict[tuple[int, int], tuple[bool, Any]] = {}  # recorded finishes
        self.commit_term: dict[int, int] = {}  # index -> first applier's term (>= commit term)
        self.net = SimNetwork(self.rng, faults)
        self.now = 0.0
        self.disk: dict[int, HardState] = {}
        self.incarnation: dict[int, int] = dict.fromkeys(self.ids, 0)
        self.nodes: dict[int, PeerCore] = {}
        self.leaders_by_term: dict[int, int] = {}
        self.minority_since: dict[int, float] = {}
        self.last_term: dict[int, int] = dict.fromkeys(self.ids, 0)
        self.disk_log: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.disk_commit: dict[int, int] = dict.fromkeys(self.ids, 0)
        self.committed: dict[int, Entry] = {}  # every entry any peer applied, by index
        self.pending: dict[int, tuple[int, str]] = {}  # index -> (term, key) proposed
        self.acked: set[str] = set()  # keys of commands a client saw acknowledged
        self.proposals = 0
        for node_id in self.ids:
            self.start(node_id)

    # ------------------------------------------------------------------ faults

    def start(self, node_id: int) -> None:
        self.incarnation[node_id] += 1
        self.last_tick[node_id] = float("-inf")
        self.held[node_id] = []
        self.nodes[node_id] = PeerCore(
            node_id,
            self.ids,
            self.settings,
            random.Random(self.rng.random()),
            self.disk.get(node_id),
            self.incarnation[node_id],
            Log(list(self.disk_log[node_id])),
            self.disk_commit[node_id],
        )

    def crash(self, node_id: int) -> None:
        self.nodes.pop(node_id, None)
        self.work.pop(node_id, None)  # its running attempts die with it

    @property
    def up(self) -> list[int]:
        return sorted(self.nodes)

    # ------------------------------------------------------------------- time

    def step(self, propose_rate: float = 0.0) -> None:
        self.now = round(self.now + STEP, 6)
        if propose_rate and self.rng.random() < propose_rate:
            self.propose()
        delivered = set()
        for _src, dst, message in self.net.due(self.now):
            node = self.nodes.get(dst)
            if node is None:
                continue
            self.held[dst].append((self.now, message))
            if not self.lazy_ticks or node.needs_cycle(message):
                self._take_held(dst)
                node.advance(self.now)  # as the driver's cycle does
                delivered.add(dst)
                self._flush(dst)
        completed = self._complete_due() if self.execute else set()
        for node_id in self.up:
            if self._tick_due(node_id, node_id in delivered):
                self._take_held(node_id)
                self.nodes[node_id].tick(self.now)
                self.last_tick[node_id] = self.now
                self._flush(node_id)
            elif node_id in completed:  # a finished task wakes the driver: a cycle
                self.nodes[node_id].advance(self.now)
                self._flush(node_id)
        self.check_invariants()

    def _take_held(self, node_id: int) -> None:
        for arrived, message in self.held[node_id]:
            self.nodes[node_id].receive(arrived, message)
        self.held[node_id] = []

    def _tick_due(self, node_id: int, delivered: bool) -> bool:
        """Whether the real driver would tick this peer now: in a cycle a delivery
        brought, as the core says (`tick_due`); otherwise only when a timer is due."""
        if not self.lazy_ticks:
            return True
        node = self.nodes[node_id]
        return node.tick_due(self.now) if delivered else node.next_tick() <= self.now

    def run(self, seconds: float, propose_rate: float = 0.0) -> None:
        for n in range(round(seconds / STEP)):
            self.step(propose_rate)
            if propose_rate and n % 25 == 0:
                self.check_logs()

    def run_until(self, condition, seconds: float) -> bool:  # type: ignore[no-untyped-def]
        for _ in range(round(seconds / STEP)):
            if condition():
                return True
            self.step()
        return bool(condition())

    def propose(self) -> None:
        """A client submits one command to a ready leader, if there is one."""
        ready = [i for i, n in self.nodes.items() if n.is_ready_leader]
        if not ready:
            return
        leader = self.rng.choice(ready)
        self.proposals += 1
        key = f"k{self.proposals}"
        task = {**self.make_task(self.proposals), "key": key}
        command = orjson.dumps({"op": "submit", "at": self.now, "tasks": [task]}).decode()
        for entry in self.nodes[leader].propose(self.now, [command]):
            self.pending[entry.index] = (entry.term, key)
        self._flush(leader)

    def _flush(self, node_id: int) -> None:
        batch = self.nodes[node_id].ready()
        self._persist(node_id, batch)  # persisted before anything is sent
        for to, message in batch.messages:
            self.net.send(self.now, node_id, to, message)
        node = self.nodes[node_id]
        for applied in batch.applied:
            self._check_applied(node_id, node.log.entries[applied.index - 1])
            self.commit_term.setdefault(applied.index, node.term)
            proposed = self.pending.get(applied.index)
            if node.is_ready_leader and proposed and proposed[0] == node.term:
                self.acked.add(proposed[1])
            if applied.op == "finish":
                self._record_finish(node_id, applied, node.log.entries[applied.index - 1])
        if self.execute:
            self._run_work(node_id, batch)

    # -------------------------------------------------------------- execution

    def _run_work(self, node_id: int, batch: CoreReady) -> None:
        work = self.work.setdefault(node_id, {})
        for key in batch.stops:
            work.pop(key, None)
        for task in batch.starts:
            if task.kind == "sleep":
                due = self.now + float(task.args["seconds"])
            else:
                due = self.now + self.rng.uniform(*RUN_TIME)
            work[(task.id, task.attempt)] = (due, _run(task))

    def _complete_due(self) -> set[int]:
        """Complete the work that is due; the peers that completed something."""
        completed = set()
        for node_id in self.up:
            work = self.work.get(node_id, {})
            for key, (due, item) in sorted(work.items()):
                if due <= self.now:
                    del work[key]
                    self.nodes[node_id].complete(self.now, item)
                    completed.add(node_id)
        return completed

    def _record_finish(self, node_id: int, applied: Applied, entry: Entry) -> None:
        """Remember the outcome of each attempt a finish ended; never two different."""
        items: dict[int, list[Any]] = {}
        for item in orjson.loads(entry.command)["items"]:
            items.setdefault(item[0], item)
        for task_id in applied.task_ids:
            _, attempt, ok, value, _ = items[task_id]
            first = self.outcomes.setdefault((task_id, attempt), (ok, value))
            if first != (ok, value):
                raise InvariantViolation(
                    f"t={self.now}: peer {node_id} recorded task {task_id} attempt {attempt} "
                    f"as {(ok, value)}, another peer as {first}"
                )

    def _persist(self, node_id: int, batch: CoreReady) -> None:
        if batch.hard_state is not None:
            self.disk[node_id] = batch.hard_state
        if batch.entries_from is not None:
            del self.disk_log[node_id][batch.entries_from - 1 :]
            self.disk_log[node_id].extend(batch.entries)
        if batch.commit_index is not None:
            self.disk_commit[node_id] = batch.commit_index

    def _check_applied(self, node_id: int, entry: Entry) -> None:
        first = self.committed.setdefault(entry.index, entry)
        if first != entry:
            raise InvariantViolation(
                f"t={self.now}: peer {node_id} applied {entry} at {entry.index}, "
                f"another peer applied {first}"
            )

    def check_logs(self) -> None:
        """Log matching, and leader completeness: a serving leader of term T holds every
        entry committed in terms up to T. (A deposed leader cut off from its successor
        serves until it notices, at most the failure timeout, and lacks what the
        successor has committed since; Raft allows that, and terms fence it.)"""
        for node_id, node in self.nodes.items():
            if node.is_ready_leader:
                for index, entry in self.committed.items():
                    if self.commit_term[index] > node.term:
                        continue
                    if node.log.term_at(index) != entry.term:
                        raise InvariantViolation(
                            f"t={self.now}: leader {node_id} lacks committed entry {index}"
                        )
        logs = [(i, n.log) for i, n in self.nodes.items()]
        for a, log_a in logs:
            for b, log_b in logs:
                if a < b:
                    self._check_matching(a, log_a, b, log_b)

    def _check_matching(self, a: int, log_a: Log, b: int, log_b: Log) -> None:
        top = min(log_a.last_index, log_b.last_index)
        same = next((i for i in range(top, 0, -1) if log_a.term_at(i) == log_b.term_at(i)), 0)
        if log_a.entries[:same] != log_b.entries[:same]:
            raise InvariantViolation(f"t={self.now}: logs of {a} and {b} break log matching")

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
            if self.execute:
                self._check_attempts(node_id, node)
        for leader in self.leaders():
            term = self.nodes[leader].election.term
            holder = self.leaders_by_term.setdefault(term, leader)
            if holder != leader:
                raise InvariantViolation(
                    f"t={self.now}: two leaders in term {term}: {holder} and {leader}"
                )
        self._check_minority_has_no_leader()

    def _check_attempts(self, node_id: int, node: PeerCore) -> None:
        for task in node.tasks.tasks.values():
            if task.attempt > task.max_attempts:
                raise InvariantViolation(
                    f"t={self.now}: peer {node_id} task {task.id} is on attempt "
                    f"{task.attempt} of {task.max_attempts}"
                )

    def _check_minority_has_no_leader(self) -> None:
        # A leader steps down once the peers it heard from within `failure_timeout` are no
        # longer a majority. When partitions shift, acks heard just before a cut still
        # count for that long, so the bound is two failure timeouts plus message slack.
        grace = 2 * self.settings.failure_timeout + 3 * self.settings.heartbeat_interval
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


def _run(task: Task) -> ResultItem:
    """What running `task` produces (the simulator's task registry)."""
    if task.kind == "echo":
        return ResultItem(task.id, task.attempt, True, orjson.dumps(task.args).decode())
    if task.kind == "sleep":
        slept = {"slept": task.args["seconds"]}
        return ResultItem(task.id, task.attempt, True, orjson.dumps(slept).decode())
    if task.kind == "fail":
        message = task.args.get("message", "failed") if isinstance(task.args, dict) else "failed"
        return ResultItem(task.id, task.attempt, False, str(message))
    return ResultItem(task.id, task.attempt, False, f"unknown task kind {task.kind!r}")
