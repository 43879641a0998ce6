"""When a peer snapshots its task table and where its log is cut, pure: `Compaction`.

A snapshot is taken right after applying an entry whose index is a multiple of
`snapshot_every`, or that carried the text of all entries applied past a multiple of
`snapshot_bytes` (so every peer takes it at the same index), and goes out with the
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


class Compaction:
    def __init__(self, settings: Settings) -> None:
        self.every = settings.snapshot_every
        self.size = settings.snapshot_bytes
        self.keep = settings.snapshot_keep
        self._write: SnapshotWrite | None = None  # for the next batch to store
        self._storing: dict[int, SnapshotWrite] = {}  # own snapshots on their way to disk

    def due(self, entry: Entry, bytes_before: int, bytes_after: int) -> bool:
        """Whether applying `entry` (the log's text applied went from `bytes_before` to
        `bytes_after` characters) calls for a snapshot."""
        crossed = self.size and bytes_before // self.size != bytes_after // self.size
        return bool(crossed or (self.every and entry.index % self.every == 0))

    def take(self, table: TaskTable, entry: Entry, log: Log) -> None:
        """The table as applying the log up to `entry` left it, to store."""
        snapshot = Snapshot(entry.index, entry.term, encode_table(table))
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
