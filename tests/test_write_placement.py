"""The rule for where a small write runs: on the loop, unless the disk was slow for half
of the last few inline writes or stalled once; then on the disk thread for a while."""

from __future__ import annotations

from peer.runtime.write_placement import WritePlacement

FAST, SLOW, STALL = 0.002, 0.02, 0.2


def placement() -> WritePlacement:
    return WritePlacement(slow=0.01, stalled=0.1, window=8, backoff=1.0)


def test_isolated_slow_writes_keep_writes_on_the_loop() -> None:
    rule = placement()
    now = 0.0
    for i in range(200):  # one slow write in eight: a shared machine's odd fsync
        now += 0.01
        rule.took(SLOW if i % 8 == 0 else FAST, now)
        assert rule.inline(now)


def test_half_of_the_last_writes_slow_sends_writes_to_the_thread_for_the_backoff() -> None:
    rule = placement()
    for i in range(4):
        rule.took(FAST, i * 0.01)
    for i in range(3):
        rule.took(SLOW, 0.1 + i * 0.01)
        assert rule.inline(0.1 + i * 0.01)  # three slow of eight: still on the loop
    rule.took(SLOW, 0.2)  # four of eight
    assert not rule.inline(0.2)
    assert not rule.inline(1.19)
    assert rule.inline(1.2)
    rule.took(SLOW, 1.21)  # judged afresh: one slow write after the backoff is not a run
    assert rule.inline(1.21)


def test_one_stalled_write_sends_writes_to_the_thread_at_once() -> None:
    rule = placement()
    rule.took(FAST, 0.0)
    rule.took(STALL, 0.5)
    assert not rule.inline(0.5)
    assert rule.inline(1.5)
