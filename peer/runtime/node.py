"""The driver: feeds one peer's pure core from the network and the clock, and carries
out what it returns, in a fixed order: persist, then send, then report.

One task owns the core; request handlers only queue messages into its inbox, or ask
for a proposal, so there is no lock around protocol state. A failed write to disk (a
full disk) holds the peer back instead of crashing it: it sends nothing that depends on
the unsaved state and retries the write every cycle (to its peers it looks down), so it
never acknowledges what is not on its disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import signal
import sqlite3
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from peer.config import ClusterConfig
from peer.protocol.commands import Command
from peer.protocol.core import PeerCore
from peer.protocol.cycle import Completed, CoreReady, Input, Proposal, Received
from peer.protocol.events import CoreEvent
from peer.protocol.log import Log
from peer.protocol.messages import PeerMessage, ResultItem
from peer.protocol.records import Applied
from peer.registry import Registry
from peer.runtime.storage import Storage
from peer.runtime.transport import Transport
from peer.runtime.validation import declared_schedules
from peer.runtime.worker import TaskRunner

log = logging.getLogger(__name__)

MAX_INBOX = 50_000
RECENT_EVENTS = 20  # core events `/cluster` shows, newest last


def event_json(at: float, event: CoreEvent) -> dict[str, Any]:
    """A core event as `/cluster` shows it: when, its name, its sentence, its fields."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return {"at": at, "event": event.name, "text": str(event), **fields}


class Node:
    def __init__(self, config: ClusterConfig, node_id: int, registry: Registry) -> None:
        self.config = config
        self.id = node_id
        self.address = config.node(node_id)
        self.storage = Storage(config.node_dir(node_id))
        self.incarnation = self.storage.next_incarnation(at_least=int(time.time() * 1000))
        entries, commit_index = self.storage.load_log()
        settings = config.settings()
        self.core = PeerCore(
            node_id,
            config.ids,
            settings,
            random.Random(),
            self.storage.load_hard_state(),
            self.incarnation,
            Log(entries),
            commit_index,
            amnesiac=self.storage.fresh,
            declared_schedules=declared_schedules(config, registry),
        )
        self.transport = Transport(node_id, {n.id: n.url for n in config.nodes}, secret(config))
        self.runner = TaskRunner(registry, config.slots, self._completed)
        self.done = 0  # attempts this peer has run to an end
        self._inbox: list[Input] = []
        self._proposals = 0  # proposal refs handed out
        self._proposed: dict[int, asyncio.Future[Applied]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"disk-{node_id}")
        self._unsaved = CoreReady()  # state the disk has not taken yet
        self._held = CoreReady()  # effects waiting for it
        self.disk_error: str | None = None
        self._waiters: dict[int, tuple[int, asyncio.Future[Applied]]] = {}
        self.changed = asyncio.Event()  # set and replaced after every cycle that did work
        self.failed: BaseException | None = None
        self.recent_events: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.event_counts: Counter[str] = Counter()  # core events seen, by name
        self.on_disk_write: Callable[[float], None] = lambda seconds: None

    # ------------------------------------------------------------------ driver

    async def start(self) -> None:
        await self.transport.start()
        self._task = asyncio.create_task(self._drive(), name=f"driver-{self.id}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.runner.close()
        await self.transport.close()
        self._disk.shutdown(wait=True)
        self.storage.close()

    def deliver(self, messages: list[PeerMessage]) -> None:
        """Queue messages from a peer for the driver (called by the HTTP handler), with
        the time they arrived; wake it unless they can wait for its next cycle."""
        if len(self._inbox) >= MAX_INBOX:
            return  # overloaded: the protocol resends what matters
        now = time.monotonic()
        self._inbox.extend(Received(now, m) for m in messages)
        if any(self.core.needs_cycle(m) for m in messages):
            self._wake.set()

    async def propose(self, command: Command) -> Applied:
        """Append `command` through the log (at the driver's next cycle) and wait until
        it is applied here.

        Raises `NotLeader` when this peer is not a ready leader, `LeadershipLost` when
        the entry was replaced by another leader's (the caller may retry safely).
        """
        if not self.core.is_ready_leader:
            raise NotLeader()
        self._proposals += 1
        future: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
        self._proposed[self._proposals] = future
        self._inbox.append(Proposal(self._proposals, (command,)))
        self._wake.set()
        return await future

    async def _drive(self) -> None:
        try:
            await self._drive_forever()
        except Exception as exc:
            log.critical("driver stopped: %r; this peer stops", exc, exc_info=True)
            self.failed = exc
            os.kill(os.getpid(), signal.SIGTERM)
            raise

    async def _drive_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            inbox, self._inbox = self._inbox, []
            batch = self.core.cycle(time.monotonic(), time.time(), inbox)
            self._await_proposed(batch)
            await self._carry_out(batch)
            next_tick = self.core.next_tick()
            if not self._wake.is_set():
                # a timer handle, not `asyncio.timeout`: most idle wake-ups are the tick,
                # and a timeout would raise and catch an exception for each
                alarm = loop.call_later(max(0.0, next_tick - time.monotonic()), self._wake.set)
                await self._wake.wait()
                alarm.cancel()
            if time.monotonic() < next_tick:
                # woken by work, not the clock: let every callback already due run first
                # (requests, frames), so one cycle takes all they bring, and its writes
                # and frames carry more per syscall
                await asyncio.sleep(0)
            self._wake.clear()

    def _await_proposed(self, batch: CoreReady) -> None:
        """Each proposal of this cycle waits for its entry, or learns it was refused."""
        for ref, entries in batch.proposed:
            future = self._proposed.pop(ref)
            if not entries:
                future.set_exception(NotLeader())
            else:
                self._waiters[entries[0].index] = (entries[0].term, future)

    async def _carry_out(self, batch: CoreReady) -> None:
        if not await self._persist(batch):
            # nothing that depends on unsaved state leaves this peer; the protocol
            # resends messages, and what was applied is handed out after the next save
            self._held.applied += batch.applied
            self._held.starts += batch.starts
            self._held.stops += batch.stops
            return
        held, self._held = self._held, CoreReady()
        self.transport.send(batch.messages)
        for applied in held.applied + batch.applied:
            self._resolve(applied)
        for task_id, attempt in held.stops + batch.stops:
            self.runner.stop(task_id, attempt)
        for task in held.starts + batch.starts:
            self.runner.start(task)
        for event in batch.events:
            log.info("%s", event, extra={"event": event.name, "term": self.core.term})
            self.recent_events.append(event_json(time.time(), event))
            self.event_counts[event.name] += 1
        if batch.applied or batch.events or batch.hard_state:
            self.changed.set()
            self.changed = asyncio.Event()

    async def _persist(self, batch: CoreReady) -> bool:
        """Write the batch (and any earlier one that failed); False if the disk refused.

        fsync runs off the loop: handlers keep accepting (and proposing) meanwhile,
        which is what fills the next batch (group commit).
        """
        unsaved = self._unsaved
        if batch.hard_state is not None:
            unsaved.hard_state = batch.hard_state
        if batch.entries_from is not None:
            start = unsaved.entries_from
            unsaved.entries_from = (
                batch.entries_from if start is None else min(start, batch.entries_from)
            )
        if batch.commit_index is not None:
            unsaved.commit_index = batch.commit_index
        if unsaved.hard_state is None and unsaved.entries_from is None:
            return True
        start = unsaved.entries_from
        entries = (
            [] if start is None else list(self.core.log.slice(start, self.core.log.last_index))
        )
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._disk,
                self.storage.save,
                unsaved.hard_state,
                start,
                entries,
                unsaved.commit_index,
            )
        except (sqlite3.Error, OSError) as exc:
            if not self.disk_error:
                log.error("cannot write state to disk (%s); holding back until it can", exc)
            self.disk_error = str(exc)
            return False
        self.on_disk_write(time.perf_counter() - started)
        if self.disk_error:
            log.warning("disk writes succeed again")
        self._unsaved, self.disk_error = CoreReady(), None
        return True

    def _completed(self, item: ResultItem) -> None:
        self.done += 1
        self._inbox.append(Completed(item))
        self._wake.set()

    def _resolve(self, applied: Applied) -> None:
        waiter = self._waiters.pop(applied.index, None)
        if waiter is None:
            return
        term, future = waiter
        if future.done():
            return
        if self.core.log.term_at(applied.index) == term:
            future.set_result(applied)
        else:
            future.set_exception(LeadershipLost())

    async def wait_changed(self, timeout: float) -> None:
        """Return after the next cycle that applied entries or changed roles, or timeout."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.changed.wait()

    # ----------------------------------------------------------------- queries

    def view(self) -> dict[str, Any]:
        view = self.core.view(time.monotonic())
        view["pid"] = os.getpid()
        view["running"] = self.runner.running
        view["done"] = self.done
        view["url"] = self.address.url
        view["events"] = list(self.recent_events)
        urls = {n.id: n.url for n in self.config.nodes}
        for member in view["members"]:
            member["url"] = urls[member["id"]]
        return view


class NotLeader(Exception):
    """This peer is not a ready leader; the write must go to the leader."""


class LeadershipLost(Exception):
    """The proposed entry was replaced by another leader's before it committed."""


def secret(config: ClusterConfig) -> bytes:
    if not config.secret:
        log.warning("cluster.secret is empty: peer messages are signed with an empty key")
    return config.secret.encode()
