"""One simulated peer's disk: what survives a crash, and the write in flight.

The driver writes a batch's state off the event loop and carries the batch out (sends,
applies) only once the write is done; meanwhile it runs no cycle. So a write may be
slow (the peer stalls, messages pile up in its inbox), refused (a full disk: nothing that
depends on it leaves, what was applied waits for the next good write, and the unsaved
state is written with it), or cut short by a crash: the write either landed or did not,
and nothing of its batch was sent. `wipe` loses everything (a replaced disk).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from election import HardState
from peer.protocol.cycle import CoreReady
from peer.protocol.log import Entry, Log


@dataclass(slots=True)
class DiskFaults:
    slow: float = 0.0  # probability a write takes a while
    slow_for: tuple[float, float] = (0.01, 0.06)  # seconds
    refuse: float = 0.0  # probability a write fails (the disk is full)


@dataclass(slots=True)
class _Write:
    done_at: float
    hard_state: HardState | None
    start: int | None
    entries: list[Entry]
    commit: int | None


class SimDisk:
    def __init__(self) -> None:
        self.hard_state: HardState | None = None
        self.log: list[Entry] = []
        self.commit = 0
        self.stored = False  # anything was ever stored (the driver's incarnation row)
        self.writing: _Write | None = None
        self._hard: HardState | None = None  # staged, not yet written
        self._from: int | None = None
        self._commit: int | None = None

    def stage(self, batch: CoreReady) -> bool:
        """Take what `batch` asks to persist (merged with what failed before); True if
        anything is waiting to be written."""
        if batch.hard_state is not None:
            self._hard = batch.hard_state
        if batch.entries_from is not None:
            start = self._from
            self._from = batch.entries_from if start is None else min(start, batch.entries_from)
        if batch.commit_index is not None:
            self._commit = batch.commit_index
        return self._hard is not None or self._from is not None

    def begin(self, now: float, log: Log, rng: random.Random, faults: DiskFaults) -> str:
        """Start writing what is staged: "done", "slow" (in flight) or "refused"."""
        if rng.random() < faults.refuse:
            return "refused"
        start = self._from
        entries = [] if start is None else list(log.slice(start, log.last_index))
        delay = rng.uniform(*faults.slow_for) if rng.random() < faults.slow else 0.0
        self.writing = _Write(now + delay, self._hard, start, entries, self._commit)
        self._hard = self._from = self._commit = None
        if delay:
            return "slow"
        self.land()
        return "done"

    def land(self) -> None:
        write, self.writing = self.writing, None
        assert write is not None
        if write.hard_state is not None:
            self.hard_state = write.hard_state
        if write.start is not None:
            del self.log[write.start - 1 :]
            self.log.extend(write.entries)
        if write.commit is not None:
            self.commit = write.commit

    def crash(self, rng: random.Random) -> None:
        """The process dies: a write in flight landed or not; nothing staged survives."""
        if self.writing is not None and rng.random() < 0.5:
            self.land()
        self.writing = None
        self._hard = self._from = self._commit = None

    def wipe(self) -> None:
        self.__init__()  # type: ignore[misc]
