"""When a peer snapshots its task table and where its log is cut, pure: `Compaction`.

A snapshot is taken right after applying an entry whose index is a multiple of
`snapshot_every`, or that carried the text of all entries applied past a multiple of
`snapshot_bytes` (so every peer takes it at the same index), both steps doubled as
often as it takes for a step of text to hold `snapshot_task_chars` per task the table
holds (a function of the table, so the same on every peer at an index): a snapshot
costs time in proportion to the table, so under fixed steps a growing table made the
same log cost more and more to snapshot; doubled steps keep the cost per character of
log bounded, at the price of a longer log for a restart to replay (bench/long_run.py,
300,000 tasks: a full restart in 5.5 s instead of 4.0). The snapshot goes out with the
core's next batch to be stored. Once the driver reports it stored, the log is cut
before it, but for the last `snapshot_keep` entries (fewer if they hold over a quarter
of `snapshot_bytes`), kept for followers a little behind. A snapshot installed from
another peer is stored the same way, the log cut at its index. No I/O.
"""

from __future__ import annotations

from peer.protocol.log import Entry, Log
from peer.protocol.settings import Settings
from peer.protocol.snapshot import Snapshot, SnapshotWrite, encode_table
from peer.protocol.tasks import TaskTable

DEFAULT_BYTES = Settings().snapshot_bytes  # the text step scaled when `snapshot_bytes` is 0


class Compaction:
    def __init__(self, settings: Settings) -> None:
        self.every = settings.snapshot_every
        self.size = settings.snapshot_bytes
        self.task_chars = settings.snapshot_task_chars
        self.keep = settings.snapshot_keep
        self._write: SnapshotWrite | None = None  # for the next batch to store
        self._storing: dict[int, SnapshotWrite] = {}  # own snapshots on their way to disk
        self.verify = False  # (the simulator's check: each snapshot also encoded afresh)

    def due(self, entry: Entry, bytes_before: int, bytes_after: int, tasks: int) -> bool:
        """Whether applying `entry` (the log's text applied went from `bytes_before` to
        `bytes_after` characters, and the table holds `tasks` tasks after it) calls for
        a snapshot."""
        scale = self.scale(tasks)
        size, every = self.size * scale, self.every * scale
        crossed = size and bytes_before // size != bytes_after // size
        return bool(crossed or (every and entry.index % every == 0))

    def scale(self, tasks: int) -> int:
        """The power of two the steps are multiplied by for a table of `tasks` tasks:
        the least that makes a step of text at least `snapshot_task_chars` per task
        (a multiple of a bigger step is one of every smaller one)."""
        reference = self.size or DEFAULT_BYTES
        need = -(-tasks * self.task_chars // reference)  # (ceiling)
        return 1 << (need - 1).bit_length() if need > 1 else 1

    def take(self, table: TaskTable, entry: Entry, log: Log) -> None:
        """The table as applying the log up to `entry` left it, to store."""
        data = encode_table(table)
        if self.verify and data != encode_table(table, reuse=False):
            raise AssertionError(f"the snapshot at {entry.index} reused stale task rows")
        snapshot = Snapshot(entry.index, entry.term, data)
        base = self._cut(entry.index, log)
        base_term = log.term_at(base)
        assert base_term is not None
        self._write = self._storing[entry.index] = SnapshotWrite(snapshot, base, base_term)

    def _cut(self, index: int, log: Log) -> int:
        budget = self.size // 4 or None
        base = max(log.base_index, index - self.keep)
        kept = 0
        for at in range(index, base, -1):
            kept += len(log.entries[at - log.base_index - 1].command)
            if budget is not None and kept > budget:
                return at
        return base

    def installed(self, snapshot: Snapshot) -> None:
        """A snapshot from another peer replaced the table: store it (and forget the
        own ones on their way: the log was already cut at its index)."""
        self._storing.clear()
        self._write = SnapshotWrite(snapshot, snapshot.index, snapshot.term)

    def take_write(self) -> SnapshotWrite | None:
        write, self._write = self._write, None
        return write

    def stored(self, index: int) -> SnapshotWrite | None:
        """The write of the snapshot at `index` landed: the own one, to cut the log at
        its base now (None for an installed one)."""
        for older in [i for i in self._storing if i < index]:
            del self._storing[older]
        return self._storing.pop(index, None)
