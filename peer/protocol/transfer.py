"""Moving a snapshot between peers in parts, pure: `part_of` cuts the part that starts
at an offset, `Assembly` puts the parts a peer receives back together.

Parts go one at a time, each answered with the offset the receiver holds (so a lost or
repeated part costs one resend, never a wrong snapshot); a part of another snapshot
than the one being assembled starts over from its beginning. Offsets count characters
of the snapshot's text. No I/O.
"""

from __future__ import annotations

from peer.protocol.messages import SnapshotChunk
from peer.protocol.snapshot import Snapshot


def part_of(snapshot: Snapshot, offset: int, size: int) -> tuple[str, bool]:
    """The text of `snapshot` from `offset`, `size` characters at most, and whether it
    is the last part."""
    data = snapshot.data[offset : offset + size]
    return data, offset + len(data) >= len(snapshot.data)


class Assembly:
    """The parts of one snapshot received so far."""

    def __init__(self) -> None:
        self.index = 0
        self.term = 0
        self.offset = 0  # characters held: the part to ask for next
        self.repeat = False  # the last part received was one already held
        self._parts: list[str] = []

    def receive(self, chunk: SnapshotChunk) -> Snapshot | None:
        """Take one part; the whole snapshot once its last part is in, else None (then
        `offset` is what to ask for: 0 to start over)."""
        if (chunk.index, chunk.index_term) != (self.index, self.term) or chunk.offset == 0:
            self._restart(chunk.index, chunk.index_term)  # (a sender starting over)
        self.repeat = chunk.offset < self.offset
        if chunk.offset != self.offset:
            return None  # repeated, or after a part this peer does not hold
        self._parts.append(chunk.data)
        self.offset += len(chunk.data)
        if not chunk.done:
            return None
        snapshot = Snapshot(self.index, self.term, "".join(self._parts))
        self._restart(0, 0)
        return snapshot

    def _restart(self, index: int, term: int) -> None:
        self.index, self.term, self.offset, self._parts = index, term, 0, []
