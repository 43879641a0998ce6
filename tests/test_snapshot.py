"""Ring 1 for snapshots: a table decoded from its snapshot is the table that applied the
log, and stays so while both apply the rest (every command kind, random histories);
malformed snapshot text is refused with `SnapshotError`; the log compacts and resets
to a snapshot's base as Raft section 7 says."""

from __future__ import annotations

import base64
import random
import zlib

import orjson
import pytest

from peer.protocol import snapshot
from peer.protocol.commands import (
    Assign,
    Assignment,
    Cancel,
    Command,
    Drain,
    Finish,
    Forget,
    Members,
    Outcome,
    Retry,
    ScheduleDelete,
    SchedulePause,
    SchedulePut,
    ScheduleSkip,
    ScheduleSpec,
    Submit,
    TaskSpec,
    Trim,
    encode_command,
)
from peer.protocol.configuration import Configuration
from peer.protocol.log import Entry, Log
from peer.protocol.records import READY, TERMINAL, TaskState
from peer.protocol.settings import QueuePolicy
from peer.protocol.snapshot import SnapshotError, decode_table, encode_table
from peer.protocol.tasks import TaskTable
from tests.test_task_table import check_consistent

QUEUES = {"slow": QueuePolicy(rate=2.0, burst=3.0), "capped": QueuePolicy(max_running=1)}


def random_history(rng: random.Random, length: int) -> list[Command]:
    """Commands a leader could write, drawn against a table that applies them."""
    table, out = TaskTable(QUEUES), []
    at = 0.0
    for index in range(1, length + 1):
        at += rng.uniform(0.0, 2.0)
        command = _one(rng, table, at, index)
        table.apply(index, encode_command(command))
        out.append(command)
    return out


def _one(rng: random.Random, table: TaskTable, at: float, n: int) -> Command:
    tasks = list(table.tasks.values())
    ready = [t for t in tasks if t.state in READY]
    running = [t for t in tasks if t.state is TaskState.RUNNING]
    ended = [t.id for t in tasks if t.state in TERMINAL]
    roll = rng.random()
    if roll < 0.3 or not tasks:
        specs = []
        for i in range(rng.randint(1, 3)):
            depends = tuple(rng.sample([t.id for t in tasks], 1)) if tasks and i == 0 else ()
            specs.append(
                TaskSpec(
                    "echo",
                    args={"n": n, "i": i},
                    queue=rng.choice(["default", "slow", "capped"]),
                    priority=rng.randint(0, 3),
                    max_attempts=rng.randint(1, 3),
                    delay=rng.choice([0.0, 0.0, 5.0]),
                    depends_on=depends if rng.random() < 0.3 else (),
                    key=f"k{rng.randint(1, 40)}" if rng.random() < 0.5 else None,
                    schedule="tick" if rng.random() < 0.1 else None,
                    due=at if rng.random() < 0.5 else None,
                )
            )
        return Submit(at, tuple(specs), rid=f"r{rng.randint(1, 30)}" if rng.random() < 0.4 else "")
    if roll < 0.5 and ready:
        task = rng.choice(ready)
        return Assign(at, (Assignment(task.id, task.attempt + 1, rng.randint(1, 3), 1),))
    if roll < 0.7 and running:
        task = rng.choice(running)
        ok = rng.random() < 0.6
        value = {"r": n} if ok else "boom"
        return Finish(at, (Outcome(task.id, task.attempt, ok, value, at + 1.0),))
    if roll < 0.75 and tasks:
        return Cancel(at, rng.choice(tasks).id)
    if roll < 0.8 and ended:
        return Retry(at, tuple(rng.sample(ended, min(2, len(ended)))))
    if roll < 0.85 and ended:
        return Trim(at, tuple(rng.sample(ended, min(3, len(ended)))))
    if roll < 0.9 and ended:
        return Forget(at, tuple(rng.sample(ended, min(3, len(ended)))), at - rng.uniform(0, 20))
    if roll < 0.91:
        return Drain(at, rng.randint(1, 3), rng.random() < 0.5)
    if roll < 0.93:  # a membership change (now and then over a stale base: a conflict)
        current = table.configuration or Configuration.of({1: "http://a:1", 2: "http://b:2"})
        base = current.index if rng.random() < 0.8 else current.index + 1
        peer = rng.randint(3, 9)
        changed = (
            current.without(peer)
            if peer in current.ids
            else current.with_learner(peer, f"http://h{peer}:{peer}")
        )
        return Members(at, base, changed)
    return _schedule_command(rng, at)


def _schedule_command(rng: random.Random, at: float) -> Command:
    roll = rng.random()
    if roll < 0.5:
        spec = ScheduleSpec("tick", TaskSpec("echo", args=1), every=rng.choice([5.0, 10.0]))
        return SchedulePut(at, spec, replace=rng.random() < 0.5)
    if roll < 0.7:
        return SchedulePause(at, "tick", rng.random() < 0.5)
    if roll < 0.9:
        return ScheduleSkip(at, "tick", at, 1, rng.choice(["missed", "overlap"]))
    return ScheduleDelete(at, "tick")


def applied(commands: list[Command], start: int = 1, table: TaskTable | None = None) -> TaskTable:
    table = table or TaskTable(QUEUES)
    for index, command in enumerate(commands, start=start):
        table.apply(index, encode_command(command))
    return table


def views(table: TaskTable) -> list[object]:
    """What the API could show of a table (the snapshot text aside)."""
    return [
        [t.to_json() for t in table.tasks.values()],
        [s.to_json() for s in table.schedules.schedules.values()],
        table.counts,
        table.queue_counts,
        table.by_key,
        table.by_rid,
        table.drained,
        table.forgotten,
        table.low_id,
        table.next_id,
        table.rates.available("slow", 1e6 - 1),
        dict(table.stats.submitted),
        dict(table.stats.finished),
        table.stats.run_seconds,
    ]


@pytest.mark.parametrize("seed", range(25))
def test_a_table_decoded_from_its_snapshot_goes_on_as_the_table_that_applied_the_log(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if seed % 2:  # the tasks encoded in many chunks, the rest in many slices, not one
        monkeypatch.setattr(snapshot, "ITEMS_PER_SLICE", 7)
        monkeypatch.setattr(TaskTable, "chunk_bits", 2)
    rng = random.Random(seed)
    history = random_history(rng, 160)
    cut = rng.randint(1, len(history) - 1)
    whole = applied(history)
    head = applied(history[:cut])
    text = encode_table(head)
    restored = decode_table(text, QUEUES)
    assert encode_table(restored) == text  # the same table, byte for byte
    assert restored.applied_index == cut
    check_consistent(restored)
    applied(history[cut:], start=cut + 1, table=restored)
    check_consistent(restored)
    assert encode_table(restored) == encode_table(whole)
    assert views(restored) == views(whole)


@pytest.mark.parametrize("seed", range(12))
def test_a_snapshot_reusing_kept_task_rows_is_the_one_encoded_afresh(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kind of change to a task drops the rows kept for its chunk: after every
    entry of a random history, the snapshot with the kept rows is the one without."""
    monkeypatch.setattr(TaskTable, "chunk_bits", seed % 3)  # chunks of 1, 2 or 4 ids
    table, reused = TaskTable(QUEUES), 0
    for index, command in enumerate(random_history(random.Random(seed), 200), start=1):
        kept = dict(table.snapshot_segments)
        table.apply(index, encode_command(command))
        reused += sum(1 for c, s in table.snapshot_segments.items() if kept.get(c) is s)
        assert encode_table(table) == encode_table(table, reuse=False), index
    assert reused > 200  # (kept rows were reused, not all rebuilt)


def test_the_random_histories_reach_every_kind_of_state() -> None:
    """(So the round trip above is not of empty tables.)"""
    tables = [applied(random_history(random.Random(seed), 160)) for seed in range(25)]
    states = {t.state for table in tables for t in table.tasks.values()}
    assert states == set(TaskState)
    assert all(table.forgotten for table in tables[:5])
    assert any(table.schedules.schedules for table in tables)
    assert any(t.trimmed for table in tables for t in table.tasks.values())
    assert any(table.rates.buckets for table in tables)


def _packed(doc: object) -> str:
    return base64.b64encode(zlib.compress(orjson.dumps(doc))).decode()


def _row(task_id: int) -> list[object]:
    table = applied([Submit(1.0, (TaskSpec("echo"),))])
    doc = orjson.loads(zlib.decompress(base64.b64decode(encode_table(table))))
    return [task_id, *doc["tasks"][0][1:]]


EMPTY = orjson.loads(zlib.decompress(base64.b64decode(encode_table(TaskTable()))))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64!",
        base64.b64encode(b"not deflated").decode(),
        _packed([]),
        _packed({"version": 99}),
        _packed({"version": 1}),
        _packed({**EMPTY, "fields": ["id"]}),
        _packed({**EMPTY, "tasks": [[1]]}),
        _packed({**EMPTY, "running": 5}),
        _packed({**EMPTY, "tasks": [_row(2), _row(1)]}),  # ids out of order
        _packed({**EMPTY, "tasks": [_row(1), _row(1)]}),  # one id twice
        base64.b64encode(zlib.compress(b"{not json")).decode(),
    ],
)
def test_malformed_snapshot_text_is_refused(text: str) -> None:
    with pytest.raises(SnapshotError):
        decode_table(text)


def test_attempt_records_of_earlier_snapshots_load_as_the_api_showed_them() -> None:
    """Snapshots written before attempts were records held them as the API's dicts: one
    still running had three keys, one ended six."""
    table = applied([Submit(1.0, (TaskSpec("echo"),) * 2)])
    applied([Assign(2.0, (Assignment(1, 1, 2, 1), Assignment(2, 1, 3, 1)))], 2, table)
    applied([Finish(3.0, (Outcome(1, 1, True, 7, 0.0),))], 3, table)
    before = {i: table.tasks[i].to_json()["attempts"] for i in (1, 2)}
    doc = orjson.loads(zlib.decompress(base64.b64decode(encode_table(table))))
    where = doc["fields"].index("attempts")
    for row in doc["tasks"]:
        row[where] = before[row[0]]  # the old shape
    assert [len(before[1][0]), len(before[2][0])] == [6, 3]
    restored = decode_table(_packed(doc))
    assert {i: restored.tasks[i].to_json()["attempts"] for i in (1, 2)} == before
    assert encode_table(restored) == encode_table(table)
    with pytest.raises(SnapshotError):  # an attempt with a field no version had
        doc["tasks"][0][where] = [{**before[1][0], "color": "red"}]
        decode_table(_packed(doc))


def entries(*terms: int, start: int = 1) -> list[Entry]:
    return [Entry(term, start + i, f"c{start + i}") for i, term in enumerate(terms)]


def test_a_compacted_log_keeps_its_indexes_and_the_base_term() -> None:
    log = Log(entries(1, 1, 2, 2, 3))
    log.compact(3)
    assert (log.base_index, log.base_term, log.last_index, log.last_term) == (3, 2, 5, 3)
    assert [log.term_at(i) for i in range(0, 7)] == [None, None, None, 2, 2, 3, None]
    assert log.entry(3) is None and log.entry(4) == Entry(2, 4, "c4")
    assert log.slice(4, 10) == tuple(entries(2, 3, start=4))
    with pytest.raises(IndexError):
        log.slice(3, 1)
    with pytest.raises(IndexError):
        log.truncate_after(2)
    assert log.append(3, "c6").index == 6


def test_a_snapshot_received_keeps_the_entries_after_it_only_if_the_log_holds_its_entry() -> None:
    log = Log(entries(1, 1, 2, 2))
    assert log.reset_to(2, 1) is True  # entry 2 is of term 1: 3 and 4 stay
    assert (log.base_index, [e.index for e in log.entries]) == (2, [3, 4])
    other = Log(entries(1, 1, 2, 2))
    assert other.reset_to(3, 3) is False  # entry 3 is of another term: all go
    assert (other.base_index, other.base_term, other.entries) == (3, 3, [])
    behind = Log(entries(1))
    assert behind.reset_to(7, 2) is False
    assert (behind.last_index, behind.last_term) == (7, 2)


def test_a_log_loaded_after_a_base_must_start_right_after_it() -> None:
    with pytest.raises(ValueError, match="starts at"):
        Log(entries(1, 1, start=5), base_index=2, base_term=1)
