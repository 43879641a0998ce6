"""Ring 1 for `peer.protocol.segments`: a stream stitched from text and kept segments, in
any mix and order, is a zlib stream of the text joined (its Adler-32 included), and the
same pieces give the same bytes."""

from __future__ import annotations

import random
import zlib

import pytest

from peer.protocol.segments import Stitcher, combined, deflated


def _text(rng: random.Random) -> bytes:
    size = rng.choice([0, 1, 7, 300, 70_000])  # (past deflate's 32 KiB window, too)
    return bytes(rng.randrange(256) if rng.random() < 0.2 else 97 for _ in range(size))


@pytest.mark.parametrize("seed", range(20))
def test_a_stitched_stream_reads_as_the_text_joined(seed: int) -> None:
    rng = random.Random(seed)
    pieces = [(_text(rng), rng.random() < 0.5) for _ in range(rng.randint(0, 6))]
    streams = []
    for _ in range(2):
        out = Stitcher()
        for text, kept in pieces:
            out.add(deflated(text)) if kept else out.write(text)
        streams.append(out.finish())
    whole = b"".join(text for text, _ in pieces)
    assert zlib.decompress(streams[0]) == whole  # (zlib checks the Adler-32 too)
    assert streams[0] == streams[1]


def test_the_combined_check_is_the_check_of_the_joined_text() -> None:
    rng = random.Random(5)
    for _ in range(200):
        first, second = _text(rng)[:500], _text(rng)[:900]
        joined = combined(zlib.adler32(first), zlib.adler32(second), len(second))
        assert joined == zlib.adler32(first + second)


def test_a_damaged_segment_check_makes_the_stream_unreadable() -> None:
    segment = deflated(b"hello")
    out = Stitcher()
    out.add(type(segment)(segment.data, segment.check ^ 1, segment.size))
    with pytest.raises(zlib.error):
        zlib.decompress(out.finish())
