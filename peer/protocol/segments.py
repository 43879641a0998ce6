"""A zlib stream stitched from pieces deflated apart, pure: `Segment`, `Stitcher`.

A snapshot's text is one zlib stream, but most of a big table does not change from one
snapshot to the next, so its pieces are deflated once and kept (`Segment`: raw deflate
blocks that end byte-aligned and not final, with the Adler-32 and the length of the
text they hold). `Stitcher` writes a stream of such pieces and of text deflated as it
comes: the zlib header, the blocks in order, a final empty block, and the Adler-32 of
the whole text, combined from the pieces' own (RFC 1950; a block may refer back only
within its piece, since each piece starts a deflater of its own). Any zlib reader reads
the result as the text joined. The same pieces in the same order give the same bytes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

LEVEL = 1  # deflate's fastest level: a table's rows repeat, so it already shrinks them tenfold
HEADER = b"\x78\x01"  # zlib, deflate with a 32 KiB window, level 1 (RFC 1950 section 2.2)
_MOD = 65521  # the largest prime below 2**16 (Adler-32's modulus)


@dataclass(frozen=True, slots=True)
class Segment:
    """Text deflated on its own: `data` (raw deflate blocks, none of them final),
    `check` (the Adler-32 of the text), `size` (its length), `count` (how many items it
    holds, for its owner)."""

    data: bytes
    check: int
    size: int
    count: int = 0


def deflated(text: bytes, count: int = 0) -> Segment:
    """`text` as a segment."""
    deflater = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
    data = deflater.compress(text) + deflater.flush(zlib.Z_SYNC_FLUSH)
    return Segment(data, zlib.adler32(text), len(text), count)


def combined(first: int, second: int, second_size: int) -> int:
    """The Adler-32 of two texts joined, from the checks of each and the length of the
    second: its running sums start from the first's instead of from 1."""
    low = (first & 0xFFFF) + (second & 0xFFFF) - 1
    high = (first >> 16) + (second >> 16) + second_size * ((first & 0xFFFF) - 1)
    return ((high % _MOD) << 16) | (low % _MOD)


class Stitcher:
    """Writes one zlib stream: text as it comes (`write`) and kept segments (`add`)."""

    def __init__(self) -> None:
        self._out = [HEADER]
        self._check = 1  # the Adler-32 of no text
        self._open: zlib._Compress | None = None  # the deflater of the text since the last segment
        self._open_check = 1
        self._open_size = 0

    def write(self, text: bytes) -> None:
        if self._open is None:
            self._open = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
        self._out.append(self._open.compress(text))
        self._open_check = zlib.adler32(text, self._open_check)
        self._open_size += len(text)

    def add(self, segment: Segment) -> None:
        self._close_open()
        self._out.append(segment.data)
        self._check = combined(self._check, segment.check, segment.size)

    def finish(self) -> bytes:
        """The whole stream (the stitcher is spent)."""
        self._close_open()
        self._out.append(zlib.compressobj(LEVEL, zlib.DEFLATED, -15).flush())
        self._out.append(self._check.to_bytes(4, "big"))
        return b"".join(self._out)

    def _close_open(self) -> None:
        if self._open is None:
            return
        self._out.append(self._open.flush(zlib.Z_SYNC_FLUSH))
        self._check = combined(self._check, self._open_check, self._open_size)
        self._open, self._open_check, self._open_size = None, 1, 0
