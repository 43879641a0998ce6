"""How a peer process manages its memory: the cyclic garbage collector's pace
(`tune_collector`) and handing the C heap's free pages back (`release_free_memory`).

A peer's heap is mostly its task table: long-lived records that reference counting
frees when retention forgets them, none of them in a cycle. CPython's default pace (a
young collection every 700 net allocations, an older one every 10 of those) walks that
table again and again: under a load of batch submits the collector took 18% of a
peer's CPU (perf, `bench/submit.py --parts batch`). Collections every
`YOUNG_EVERY` allocations, and older ones rarer, cost a fraction of that; the only
garbage they wait longer for is the rare cycle (an exception and its frames), a few
megabytes at most.
"""

from __future__ import annotations

import ctypes
import gc
from typing import Any

YOUNG_EVERY = 20_000  # net container allocations between two young collections
MIDDLE_EVERY = 20  # young collections between two of the middle generation
OLD_EVERY = 20  # middle collections between two full ones (CPython adds its 25% rule)

_LIBC: Any = None


def tune_collector() -> None:
    """Set the collector's pace for a peer, and freeze what is alive now (once, at
    start, after loading its state): the modules' objects (about 50,000) and the table
    loaded from disk are never garbage, and a full collection that walks them stalls
    the loop (36 ms for the modules alone, measured)."""
    gc.set_threshold(YOUNG_EVERY, MIDDLE_EVERY, OLD_EVERY)
    gc.collect()
    gc.freeze()


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's `malloc_trim`): retention
    frees what every task used, but the heap keeps the pages unless asked; nothing
    where the C library has no such call."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)
