"""Where a peer's next small write runs: on the event loop, or on the disk thread.

A small write is cheaper on the loop than handed to the disk thread and back (the hand-off
wakes two threads), but while it runs the loop does nothing else, so a disk that has
become slow must not keep holding it up. On a shared machine single writes are slow now
and then (here about 3 in 100 take over 10 ms while five peers fsync on one disk), and
one of them says little about the disk; so the writes go to the thread for a while only
when the disk is slow for a run of writes (half of the last few) or stalls once (one
write long enough to hold up the heartbeats).
"""

from __future__ import annotations

from collections import deque

SLOW = 0.01  # seconds: an inline write this slow counts as slow
STALLED = 0.1  # seconds: one inline write this slow sends the next writes to the thread
WINDOW = 8  # the last inline writes looked at; half of them slow sends writes to the thread
BACKOFF = 1.0  # seconds the writes stay on the thread (the loop keeps sending meanwhile)


class WritePlacement:
    """Tracks how long the recent inline writes took; says whether the next goes inline."""

    def __init__(
        self,
        slow: float = SLOW,
        stalled: float = STALLED,
        window: int = WINDOW,
        backoff: float = BACKOFF,
    ) -> None:
        self.slow = slow
        self.stalled = stalled
        self.backoff = backoff
        self._recent: deque[bool] = deque(maxlen=window)  # True: that write was slow
        self._threaded_until = float("-inf")

    def inline(self, now: float) -> bool:
        """True when the next small write may run on the loop at `now`."""
        return now >= self._threaded_until

    def took(self, seconds: float, now: float) -> None:
        """An inline write that ended at `now` took `seconds`."""
        self._recent.append(seconds > self.slow)
        window = self._recent.maxlen or 1
        if seconds > self.stalled or sum(self._recent) * 2 >= window:
            self._threaded_until = now + self.backoff
            self._recent.clear()  # the disk is judged afresh when writes come back
