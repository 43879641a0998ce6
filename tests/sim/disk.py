"""One simulated peer's disk: what survives a crash, and the write in flight.

The driver writes on a disk thread while it goes on cycling (`peer.protocol.writes`
decides what waits for which write). So a write may be slow (the peer keeps cycling, its
batches' effects pile up behind the write), refused (a full disk: nothing that depends
on it leaves, and its state is written again with the next write), or cut short by a
crash: the write either landed or did not, and nothing that waited for it was sent.
`wipe` loses everything (a replaced disk). A write may store a snapshot: the log's
entries up to its base go in the same write.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from election import HardState
from peer.protocol.log import Entry, Log
from peer.protocol.snapshot import Snapshot
from peer.protocol.writes import Write


@dataclass(slots=True)
class DiskFaults:
    slow: float = 0.0  # probability a write takes a while
    slow_for: tuple[float, float] = (0.01, 0.06)  # seconds
    refuse: float = 0.0  # probability a write fails (the disk is full)


class SimDisk:
    def __init__(self) -> None:
        self.hard_state: HardState | None = None
        self.log: list[Entry] = []  # the entries after the base
        self.base_index = 0
        self.base_term = 0
        self.snapshot: Snapshot | None = None
        self.commit = 0
        self.stored = False  # anything was ever stored (the driver's incarnation row)
        self.writing: Write | None = None
        self.done_at = 0.0  # when the write in flight lands

    def begin(self, now: float, write: Write, rng: random.Random, faults: DiskFaults) -> str:
        """Start `write`: "done" (landed at once), "slow" (in flight) or "refused"."""
        if rng.random() < faults.refuse:
            return "refused"
        delay = rng.uniform(*faults.slow_for) if rng.random() < faults.slow else 0.0
        self.writing, self.done_at = write, now + delay
        if delay:
            return "slow"
        self.land()
        return "done"

    def land(self) -> None:
        write, self.writing = self.writing, None
        assert write is not None
        if write.hard_state is not None:
            self.hard_state = write.hard_state
        if write.snapshot is not None:
            self.snapshot = write.snapshot.snapshot
            drop = write.snapshot.base_index - self.base_index
            del self.log[: max(0, drop)]
            self.base_index, self.base_term = write.snapshot.base_index, write.snapshot.base_term
        if write.entries_from is not None:
            del self.log[max(0, write.entries_from - self.base_index - 1) :]
            self.log.extend(write.entries)
        if self.log and self.log[0].index != self.base_index + 1:
            raise AssertionError(f"disk log starts at {self.log[0].index}, base {self.base_index}")
        if write.commit_index is not None:
            self.commit = write.commit_index

    @property
    def last_index(self) -> int:
        return self.base_index + len(self.log)

    def holds(self, index: int, entry: Entry) -> bool:
        """Whether this disk has `entry` at `index`, or a snapshot past it."""
        if index <= self.base_index:
            return self.snapshot is not None
        offset = index - self.base_index
        return offset <= len(self.log) and self.log[offset - 1] == entry

    def stored_log(self) -> Log:
        return Log(list(self.log), self.base_index, self.base_term)

    def crash(self, rng: random.Random) -> None:
        """The process dies: a write in flight landed or not."""
        if self.writing is not None and rng.random() < 0.5:
            self.land()
        self.writing = None

    def wipe(self) -> None:
        self.__init__()  # type: ignore[misc]
