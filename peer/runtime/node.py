"""The driver: feeds one peer's pure core from the network and the clock, and carries
out what it returns, in a fixed order: persist, then send, then report.

One task owns the core; request handlers only queue messages into its inbox, or ask
for a proposal, so there is no lock around protocol state. Big writes run on a disk
thread while the driver goes on cycling, small ones on the loop (the hand-off to a
thread costs more than they do); what a batch sends or hands out waits for the write
that covers it (`peer.protocol.writes`), except a leader's appends, which leave at once.
A failed write to disk (a full disk) holds the peer back instead of crashing it: it
sends nothing that depends on the unsaved state and retries the write after every
cycle (to its peers it looks down), so it never acknowledges what is not on its disk;
meanwhile a proposal is refused at once (`DiskRefused`), and one waiting for its entry
when the disk refuses is told so (the entry may still commit once the disk recovers).
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
from peer.protocol.configuration import Configuration
from peer.protocol.core import PeerCore
from peer.protocol.cycle import (
    Completed,
    CoreReady,
    Hurry,
    Input,
    Persisted,
    Proposal,
    Received,
    SnapshotStored,
)
from peer.protocol.events import CoreEvent
from peer.protocol.messages import PeerMessage, ResultItem
from peer.protocol.records import Applied
from peer.protocol.writes import Write, WriteQueue
from peer.registry import Registry
from peer.runtime.memory import release_free_memory
from peer.runtime.storage import Storage
from peer.runtime.transport import Transport
from peer.runtime.validation import declared_schedules
from peer.runtime.worker import TaskRunner
from peer.runtime.write_placement import WritePlacement

log = logging.getLogger(__name__)

MAX_INBOX = 50_000
RECENT_EVENTS = 20  # core events `/cluster` shows, newest last
TRIM_EVERY = 1.0  # seconds between two returns of free heap memory to the system
INLINE_WRITE_CHARS = 64 * 1024  # writes of at most this much log text run on the loop


def event_json(at: float, event: CoreEvent) -> dict[str, Any]:
    """A core event as `/cluster` shows it: when, its name, its sentence, its fields."""
    fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
    return {"at": at, "event": event.name, "text": str(event), **fields}


class Node:
    def __init__(
        self, config: ClusterConfig, node_id: int, registry: Registry, join: bool = False
    ) -> None:
        """`join`: this peer is new to a running cluster (cluster.toml lists it, the
        cluster's configuration does not yet): until the log says otherwise it is a
        learner, which never campaigns; `peer members add` makes it a member."""
        self.config = config
        self.id = node_id
        self.address = config.node(node_id)
        self.storage = Storage(config.node_dir(node_id))
        self.incarnation = self.storage.next_incarnation(at_least=int(time.time() * 1000))
        stored_log, commit_index = self.storage.load_log()
        settings = config.settings()
        self.core = PeerCore(
            node_id,
            config.ids,
            settings,
            random.Random(),
            self.storage.load_hard_state(),
            self.incarnation,
            stored_log,
            commit_index,
            amnesiac=self.storage.fresh,
            declared_schedules=declared_schedules(config, registry),
            snapshot=self.storage.load_snapshot(),
            bootstrap=Configuration.of(
                {n.id: n.url for n in config.nodes}, (node_id,) if join else ()
            ),
        )
        context = config.tls.client_context(node_id) if config.tls is not None else None
        self.transport = Transport(
            node_id, self.core.addresses(), secret(config), context, self.incarnation
        )
        self._addresses_version = self.core.addresses_version
        self.runner = TaskRunner(registry, config.slots, self._completed)
        self.done = 0  # attempts this peer has run to an end
        self._inbox: list[Input] = []
        self._proposals = 0  # proposal refs handed out
        self._proposed: dict[int, asyncio.Future[Applied]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"disk-{node_id}")
        self.writes = WriteQueue()  # what the disk has not taken yet, and what waits
        self._writing: asyncio.Future[None] | None = None  # the write in flight
        self._write_started = 0.0
        self._trimmed_at = 0.0  # (the disk thread's)
        self.placement = WritePlacement()  # small writes on the loop unless the disk is slow
        self.disk_error: str | None = None
        self._waiters: dict[int, tuple[int, asyncio.Future[Applied]]] = {}
        self.changed = asyncio.Event()  # set and replaced after every cycle that did work
        # the log index every write acknowledged through this peer was applied by on the
        # leader: reads here wait until this peer has applied that far (`caught_up`)
        self.reads_wait_for = 0
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
        it is applied here. (A follower that forwarded the write is not told of the
        commit at once: it answers from this peer's reply, and holds its reads until it
        has applied it, `caught_up`; so it can stay a spare.)

        Raises `NotLeader` when this peer is not a ready leader, `LeadershipLost` when
        the entry was replaced by another leader's (the caller may retry safely).
        """
        if self.disk_error:
            raise DiskRefused(self.disk_error, proposed=False)
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
        next_tick = 0.0
        while True:
            self._finish_write()
            if self._worth_a_cycle(next_tick):
                inbox, self._inbox = self._inbox, []
                batch = self.core.cycle(time.monotonic(), time.time(), inbox)
                self._await_proposed(batch)
                self._carry_out(batch)
            if self._start_write(loop):
                self._finish_write()  # (written at once: its replies leave this round)
            next_tick = self.core.next_tick()
            if not self._wake.is_set():
                # a timer handle, not `asyncio.timeout`: most idle wake-ups are the tick,
                # and a timeout would raise and catch an exception for each
                alarm = loop.call_later(max(0.0, next_tick - time.monotonic()), self._wake.set)
                await self._wake.wait()
                alarm.cancel()
            if self.core.replicator.leading and time.monotonic() < next_tick:
                # woken by work, not the clock: let every callback already due run first
                # (requests, frames), so one cycle takes all they bring, and its writes
                # and frames carry more per syscall. (Not on a follower: what wakes it is
                # the leader's stream, whose handler took every frame it had buffered
                # before the driver runs, so one more turn would only delay its write.)
                await asyncio.sleep(0)
            self._wake.clear()

    def _worth_a_cycle(self, next_tick: float) -> bool:
        """False when all that woke the driver is a landed write on a peer that does not
        lead: its news (`Persisted`) waits for the next cycle, which is all it needs
        there (the leader counts its own copy at once)."""
        if self.core.replicator.leading or time.monotonic() >= next_tick:
            return True
        return any(not isinstance(item, Persisted) for item in self._inbox)

    def _await_proposed(self, batch: CoreReady) -> None:
        """Each proposal of this cycle waits for its entry, or learns it was refused."""
        for ref, refusal in batch.refused:
            self._proposed.pop(ref).set_exception(refusal)
        for ref, entries in batch.proposed:
            future = self._proposed.pop(ref)
            if not entries:
                future.set_exception(NotLeader())
            else:
                self._waiters[entries[0].index] = (entries[0].term, future)

    def _carry_out(self, batch: CoreReady) -> None:
        """A leader's appends leave now, unless the disk is failing (then this peer
        sends nothing, so it looks down); the rest once the writes before it landed."""
        if self.disk_error:
            batch.messages[:0], batch.early = batch.early, []
        if self.core.addresses_version != self._addresses_version:
            self._addresses_version = self.core.addresses_version
            self.transport.set_urls(self.core.addresses())
        self.transport.send(batch.early)
        for released in self.writes.add(batch):
            self._release(released)

    def _release(self, batch: CoreReady) -> None:
        """Effects of a batch whose state, and everything before it, is on disk."""
        self.transport.send(batch.messages)
        for applied in batch.applied:
            self._resolve(applied)
        for task_id, attempt in batch.stops:
            self.runner.stop(task_id, attempt)
        for task in batch.starts:
            self.runner.start(task)
        for event in batch.events:
            log.info("%s", event, extra={"event": event.name, "term": self.core.term})
            self.recent_events.append(event_json(time.time(), event))
            self.event_counts[event.name] += 1
        if batch.applied or batch.events or batch.hard_state:
            self.changed.set()
            self.changed = asyncio.Event()

    def _start_write(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Write what the cycles staged: a big write (or a snapshot) off the loop, so
        the driver goes on cycling (and handlers on proposing) meanwhile, which is what
        fills the next write; a small one on the loop (`_save_inline`): a leader's once
        the callbacks already due ran (its appends leave first, so its disk and the
        network work at once), any other peer's at once (what it sends, its replies
        and votes, waits for the write anyway). True when the write is already done."""
        write = self.writes.take_write(self.core.log)
        if write is None:
            return False
        self._write_started = time.perf_counter()
        if (
            write.snapshot is None
            and _text_size(write) <= INLINE_WRITE_CHARS
            and self.placement.inline(time.monotonic())
        ):
            self._writing = loop.create_future()
            if self.core.replicator.leading:
                loop.call_soon(self._save_inline, write, self._writing)
                return False
            self._save_inline(write, self._writing, wake=False)
            return True
        self._writing = loop.run_in_executor(self._disk, self._save, write)
        # a refused write is noticed at the next cycle and retried after it, not at once
        self._writing.add_done_callback(self._wake_if_written)
        return False

    def _save_inline(self, write: Write, done: asyncio.Future[None], wake: bool = True) -> None:
        """A small write, on the loop (a leader's after the callbacks already due, so
        its appends leave first; `wake` False when the driver itself calls it and
        finishes the write at once), cheaper than handing it to the disk thread and back,
        which costs more than the write when it is small. A disk slow for a run of writes,
        or one write that stalls, sends the writes of the next second to the thread
        (`WritePlacement`), so a slow disk never holds up the loop's heartbeats for long."""
        started = time.perf_counter()
        try:
            self.storage.save(
                write.hard_state, write.entries_from, write.entries, write.commit_index
            )
        except Exception as exc:
            done.set_exception(exc)  # noticed by `_finish_write`, as a thread's write
            return
        done.set_result(None)
        if wake:
            self._wake.set()
        self.placement.took(time.perf_counter() - started, time.monotonic())
        if time.monotonic() - self._trimmed_at > TRIM_EVERY:
            self._trimmed_at = time.monotonic()
            with contextlib.suppress(RuntimeError):  # the disk thread shut down
                self._disk.submit(release_free_memory)

    def _wake_if_written(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._wake.set()

    def _save(self, write: Write) -> None:
        """On the disk thread: one write; then, once a second at most, the C heap's free
        memory goes back to the system (off the loop: it walks the heap)."""
        self.storage.save(
            write.hard_state, write.entries_from, write.entries, write.commit_index, write.snapshot
        )
        if time.monotonic() - self._trimmed_at > TRIM_EVERY:
            self._trimmed_at = time.monotonic()
            release_free_memory()

    def _finish_write(self) -> None:
        """If the write in flight is done: release what waited for it and tell the core
        (its own copy of the entries counts from now), or note that the disk refused."""
        writing = self._writing
        if writing is None or not writing.done():
            return
        self._writing = None
        error = writing.exception()
        if error is not None:
            if not isinstance(error, sqlite3.Error | OSError):
                raise error
            if not self.disk_error:
                log.error("cannot write state to disk (%s); holding back until it can", error)
            self.disk_error = str(error)
            self.writes.refused()
            self._refuse_waiters(DiskRefused(self.disk_error, proposed=True))
            return
        self.on_disk_write(time.perf_counter() - self._write_started)
        if self.disk_error:
            log.warning("disk writes succeed again")
            self.disk_error = None
        write = self.writes.in_flight
        assert write is not None
        last = write.last_entry
        if last is not None:
            self._inbox.append(Persisted(last.index, last.term))
        if write.snapshot is not None:
            self._inbox.append(SnapshotStored(write.snapshot.snapshot.index))
        for batch in self.writes.landed():
            self._release(batch)

    def _refuse_waiters(self, exc: DiskRefused) -> None:
        """Proposals waiting for their entries hear that the disk refused it (their
        entries stay in the log and are written once the disk takes writes again)."""
        for _, future in self._waiters.values():
            if not future.done():
                future.set_exception(exc)
        self._waiters.clear()

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

    def read_after(self, index: int) -> None:
        """A write acknowledged through this peer was applied at `index` on the leader."""
        self.reads_wait_for = max(self.reads_wait_for, index)

    def behind(self) -> bool:
        """Whether this peer has yet to apply a write acknowledged through it."""
        return self.core.tasks.applied_index < self.reads_wait_for

    def hurry(self, peer: int) -> None:
        """Follower `peer` asked for the log up to the commit index now (as leader)."""
        self._inbox.append(Hurry(peer))
        self._wake.set()

    async def caught_up(self, timeout: float) -> None:
        """Wait (at most `timeout` seconds) until this peer has applied every write
        acknowledged through it, so a client reads back what it wrote here."""
        await self.applied_through(self.reads_wait_for, timeout)  # (fixed: not later writes)

    async def applied_through(self, target: int, timeout: float) -> None:
        """Wait (at most `timeout` seconds) until this peer has applied the log through
        index `target`."""
        deadline = time.monotonic() + timeout
        while self.core.tasks.applied_index < target:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await self.wait_changed(left)

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
        urls = self.core.addresses()
        urls[self.id] = self.address.url
        for member in view["members"]:
            member["url"] = urls.get(member["id"])
        return view


class NotLeader(Exception):
    """This peer is not a ready leader; the write must go to the leader."""


class LeadershipLost(Exception):
    """The proposed entry was replaced by another leader's before it committed."""


class DiskRefused(Exception):
    """This peer's disk refuses writes (`reason`): a proposal is refused before it
    enters the log (`proposed` False), or after (its entry may still commit)."""

    def __init__(self, reason: str, proposed: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.proposed = proposed


def _text_size(write: Write) -> int:
    return sum(len(entry.command) for entry in write.entries)


def secret(config: ClusterConfig) -> bytes:
    if not config.secret:
        log.warning("cluster.secret is empty: peer messages are signed with an empty key")
    return config.secret.encode()
