"""Ring 1: the write queue (`peer.protocol.writes.WriteQueue`): what the next write holds,
and which batches wait for which write. Pure; driven directly."""

from __future__ import annotations

from election import HardState
from peer.protocol.cycle import CoreReady
from peer.protocol.log import Entry, Log
from peer.protocol.messages import AppendReply
from peer.protocol.records import Applied
from peer.protocol.writes import WriteQueue


def log_of(*terms: int) -> Log:
    return Log([Entry(t, i + 1, f"c{i + 1}") for i, t in enumerate(terms)])


def batch(
    entries_from: int | None = None,
    hard: HardState | None = None,
    tag: int = 0,
    applied: int | None = None,
) -> CoreReady:
    """A batch asking to persist from `entries_from` (and `hard`), with one message
    naming it by `tag`, and the entry at `applied` applied."""
    return CoreReady(
        hard_state=hard,
        entries_from=entries_from,
        messages=[(2, AppendReply(1, 1, True, tag))],
        applied=[] if applied is None else [Applied(applied, "noop")],
    )


def tags(batches: list[CoreReady]) -> list[int]:
    return [b.messages[0][1].match_index for b in batches]  # type: ignore[union-attr]


def test_a_batch_with_nothing_to_write_and_nothing_in_flight_goes_at_once() -> None:
    queue = WriteQueue()
    assert tags(queue.add(batch(tag=1))) == [1]
    assert queue.take_write(log_of()) is None


def test_a_batch_waits_for_the_write_that_covers_it() -> None:
    queue, log = WriteQueue(), log_of(1, 1)
    assert queue.add(batch(entries_from=1, hard=HardState(1, 1), tag=1)) == []
    write = queue.take_write(log)
    assert write is not None and write.entries == tuple(log.entries)
    assert write.hard_state == HardState(1, 1) and write.entries_from == 1
    assert queue.take_write(log) is None  # one write at a time
    assert tags(queue.landed()) == [1]
    assert queue.holding == 0


def test_the_write_is_a_copy_the_log_may_change_under() -> None:
    queue, log = WriteQueue(), log_of(1, 1)
    queue.add(batch(entries_from=1))
    write = queue.take_write(log)
    log.truncate_after(0)
    log.append(2, "new")
    assert write is not None and [e.term for e in write.entries] == [1, 1]


def test_batches_while_a_write_is_in_flight_wait_in_order_for_the_write_they_need() -> None:
    queue, log = WriteQueue(), log_of(1)
    queue.add(batch(entries_from=1, tag=1))
    first = queue.take_write(log)
    assert queue.add(batch(tag=2)) == []  # nothing of its own: it waits for the first write
    log.append(1, "c2")
    assert queue.add(batch(entries_from=2, tag=3)) == []  # needs the next write
    assert queue.add(batch(tag=4)) == []  # behind 3, so it needs the next write too
    assert tags(queue.landed()) == [1, 2]
    second = queue.take_write(log)
    assert first is not None and second is not None and second.number == first.number + 1
    assert second.entries_from == 2 and [e.index for e in second.entries] == [2]
    assert tags(queue.landed()) == [3, 4]


def test_what_is_staged_meanwhile_goes_in_one_write() -> None:
    queue, log = WriteQueue(), log_of(1, 1, 1)
    queue.add(batch(entries_from=3))
    queue.take_write(log)
    queue.add(batch(entries_from=2, hard=HardState(2, None)))
    queue.add(batch(hard=HardState(3, 3)))
    queue.landed()
    write = queue.take_write(log)
    assert write is not None and write.entries_from == 2 and write.hard_state == HardState(3, 3)


def test_a_refused_write_is_written_again_with_what_came_after_and_holds_what_applied() -> None:
    queue, log = WriteQueue(), log_of(1, 1, 1)
    queue.add(batch(entries_from=2, hard=HardState(1, 1), tag=1, applied=1))
    queue.take_write(log)
    queue.add(batch(entries_from=3, tag=2, applied=2))
    queue.refused()
    assert queue.holding == 1 and queue.staged
    retry = queue.take_write(log)
    assert retry is not None and retry.entries_from == 2 and retry.hard_state == HardState(1, 1)
    assert [e.index for e in retry.entries] == [2, 3]
    (released,) = queue.landed()
    assert released.messages == []  # dropped: the protocol resends what matters
    assert [a.index for a in released.applied] == [1, 2]  # what was applied, in order


def test_an_ack_of_an_older_term_than_a_landed_write_recorded_is_dropped() -> None:
    """An old leader's append answered, then a newer leader's term adopted (and its
    conflicting entries written over the ones acknowledged) before the write started:
    the acknowledgement would vouch for entries no longer on disk, so it never leaves;
    the rest of its batch does."""
    queue = WriteQueue()
    old = batch(entries_from=3, tag=4)
    old.messages.append((1, AppendReply(2, 1, False, 0)))  # (a refusal is never stale)
    queue.add(old)
    new = batch(entries_from=3, hard=HardState(2, None))
    new.messages = [(3, AppendReply(2, 1, True, 3))]  # the new leader's, of its term
    queue.add(new)
    write = queue.take_write(log_of(1, 1, 2))
    assert write is not None and write.hard_state == HardState(2, None)
    first, second = queue.landed()
    assert [m for _, m in first.messages] == [AppendReply(2, 1, False, 0)]
    assert [m for _, m in second.messages] == [AppendReply(2, 1, True, 3)]
