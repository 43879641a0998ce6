"""Snapshots of the task table: `Snapshot` (what a peer holds up to an index) and the
codec between a `TaskTable` and its text (`encode_table`, `decode_table`).

A snapshot is the whole state applying the log up to `index` built: every task, the keys
and request ids that deduplicate, the schedules, the rate buckets, the totals, the
drained peers, the membership configuration and the retention orders. Its text is the
table's JSON (orjson), deflated and in base64: a table of tasks repeats itself, so the
text is a fraction of the JSON, cheap to keep in memory, store and send. Peers take one
at the same indexes (every `snapshot_every` entries, and whenever the text of the
entries applied passes another multiple of `snapshot_bytes`), so two snapshots of one
index are the same text: the simulator checks that. Insertion orders are kept, sets
sorted, so a table decoded and applied further is the table that applied everything.
Decoding checks the shape and raises `SnapshotError` on anything else. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import operator
import zlib
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import islice
from typing import Any

import orjson

from peer.protocol.commands import CommandError, ScheduleSpec
from peer.protocol.configuration import Configuration
from peer.protocol.queues import Bucket
from peer.protocol.records import Attempt, Task, TaskState
from peer.protocol.schedules import Schedule
from peer.protocol.segments import Segment, Stitcher, deflated
from peer.protocol.settings import QueuePolicy
from peer.protocol.stats import Histogram
from peer.protocol.tasks import TaskTable

VERSION = 1
TASK_FIELDS = tuple(f.name for f in dataclasses.fields(Task))
_task_row = operator.attrgetter(*TASK_FIELDS)
_STATE = TASK_FIELDS.index("state")
_DEPENDS_ON = TASK_FIELDS.index("depends_on")
_ATTEMPTS = TASK_FIELDS.index("attempts")
_DEPENDENTS = TASK_FIELDS.index("dependents")
ITEMS_PER_SLICE = 2000
COMMA: Segment = deflated(b",")  # between two chunks of task rows


class SnapshotError(ValueError):
    """Text that is not a snapshot this version can read."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The table after applying the log up to `index` (whose entry had `term`)."""

    index: int
    term: int
    data: str


@dataclass(frozen=True, slots=True)
class SnapshotWrite:
    """A snapshot to store, with the log's new base: the entries up to `base_index` (at
    most the snapshot's index; the rest kept for followers a little behind) go."""

    snapshot: Snapshot
    base_index: int
    base_term: int


def encode_table(table: TaskTable, reuse: bool = True) -> str:
    """The table's snapshot text. Its tasks go a chunk of ids at a time (`_write_tasks`),
    each chunk deflated apart and kept in the table until one of its tasks changes
    (`reuse`: False builds every chunk afresh and keeps none, for checks): between two
    snapshots most of a big table is finished or waiting and unchanged, so a snapshot
    re-encodes only what changed. The other big collections (keys, request ids, the
    retention orders) are encoded a slice at a time into the deflater: orjson reserves
    far more than it writes while it encodes a long list."""
    out = Stitcher()
    out.write(orjson.dumps(_small_parts(table))[:-1])
    out.write(b',"tasks":[')
    _write_tasks(out, table, reuse)
    out.write(b"]")
    for name, items in _big_parts(table).items():
        out.write(b',"' + name.encode() + b'":[')
        rest, first = iter(items), True
        while chunk := list(islice(rest, ITEMS_PER_SLICE)):
            out.write((b"" if first else b",") + orjson.dumps(chunk)[1:-1])
            first = False
        out.write(b"]")
    out.write(b"}")
    return base64.b64encode(out.finish()).decode("ascii")


def _write_tasks(out: Stitcher, table: TaskTable, reuse: bool) -> None:
    """The task rows, in id order, a segment per chunk of ids (`TaskTable.chunk_bits`):
    the kept one if the table still has it (no task of the chunk changed, came or went
    since), else one encoded now (and kept if `reuse`)."""
    kept = table.snapshot_segments if reuse else {}
    bits = table.chunk_bits
    tasks = iter(table.tasks.values())
    task = next(tasks, None)
    previous = -1
    while task is not None:
        chunk = task.id >> bits
        assert chunk > previous, "the table holds its tasks in id order"
        if previous >= 0:
            out.add(COMMA)
        previous = chunk
        segment = kept.get(chunk)
        if segment is None:
            rows = [_task_row(task)]
            for task in tasks:
                if task.id >> bits != chunk:
                    break
                rows.append(_task_row(task))
            else:
                task = None
            segment = deflated(orjson.dumps(rows)[1:-1], len(rows))
            if reuse:
                kept[chunk] = segment
        else:  # (its tasks are the next `count`: a change to any would have dropped it)
            tail = deque(islice(tasks, segment.count - 1), maxlen=1)
            assert (tail[0] if tail else task).id >> bits == chunk, "a kept chunk is stale"
            task = next(tasks, None)
        out.add(segment)


def _small_parts(table: TaskTable) -> dict[str, Any]:
    """What a snapshot holds besides the big collections: encoded in one go."""
    stats = table.stats
    return {
        "version": VERSION,
        "applied_index": table.applied_index,
        "log_bytes": table.log_bytes,
        "next_id": table.next_id,
        "low_id": table.low_id,
        "forgotten": table.forgotten,
        "fields": TASK_FIELDS,
        "forgotten_times": list(table.forgotten_times),
        "finished_queues": list(table.finished),
        "trimmed_queues": list(table.trimmed),
        "counts": table.counts,
        "queue_counts": list(table.queue_counts.items()),
        "running": [[worker, sorted(ids)] for worker, ids in table.running.items()],
        "running_by_queue": list(table.running_by_queue.items()),
        "drained": sorted(table.drained),
        "configuration": None
        if table.configuration is None
        else [table.configuration.index, table.configuration.to_json()],
        "schedules": [_schedule_json(s) for s in table.schedules.schedules.values()],
        "rates": [[q, b.tokens, b.at] for q, b in table.rates.buckets.items()],
        "submitted": [[*key, n] for key, n in stats.submitted.items()],
        "finished_stats": [[*key, n] for key, n in stats.finished.items()],
        "attempts_failed": list(stats.attempts_failed.items()),
        "run_seconds": [stats.run_seconds.counts, stats.run_seconds.total],
        "wait_seconds": [stats.wait_seconds.counts, stats.wait_seconds.total],
    }


def _big_parts(table: TaskTable) -> dict[str, Iterable[Any]]:
    """The collections that grow with the tasks (but the tasks), as items to encode a
    slice at a time."""
    return {
        "by_key": table.by_key.items(),
        "by_rid": table.by_rid.items(),
        "rid_times": table.rid_times.items(),
        "forgotten_keys": table.forgotten_keys.items(),
        "finished": ((q, i) for q, ids in table.finished.items() for i in ids),
        "trimmed": ((q, i, at) for q, ids in table.trimmed.items() for i, at in ids.items()),
    }


def decode_table(text: str, queues: dict[str, QueuePolicy] | None = None) -> TaskTable:
    """The table `text` holds (`queues`: the per-queue policies, as for `TaskTable`)."""
    try:
        doc = orjson.loads(zlib.decompress(base64.b64decode(text, validate=True)))
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise SnapshotError(f"not a version {VERSION} snapshot")
        return _build(doc, queues or {})
    except (zlib.error, binascii.Error, CommandError, LookupError, TypeError, ValueError) as exc:
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"malformed snapshot: {exc!r}") from exc


def _build(doc: dict[str, Any], queues: dict[str, QueuePolicy]) -> TaskTable:
    table = TaskTable(queues)
    table.applied_index = int(doc["applied_index"])
    table.log_bytes = int(doc["log_bytes"])
    table.next_id, table.low_id = int(doc["next_id"]), int(doc["low_id"])
    table.forgotten = int(doc["forgotten"])
    fields = tuple(doc["fields"])
    if fields != TASK_FIELDS:
        raise SnapshotError("the snapshot's task fields differ from this version's")
    last_id = 0
    for row in doc["tasks"]:
        row[_STATE] = TaskState(row[_STATE])
        row[_DEPENDS_ON] = tuple(row[_DEPENDS_ON])
        row[_ATTEMPTS] = [Attempt(**a) for a in row[_ATTEMPTS]] or ()
        row[_DEPENDENTS] = row[_DEPENDENTS] or ()
        task = Task(*row)
        if task.id <= last_id:  # (ids only grow: chunks of rows and `low_id` rely on it)
            raise SnapshotError(f"task {task.id} comes after task {last_id}")
        last_id = task.id
        task.kind, task.queue = table.name(task.kind), table.name(task.queue)
        table.tasks[task.id] = task
    table.by_key = {str(key): int(task_id) for key, task_id in doc["by_key"]}
    table.by_rid = {str(rid): tuple(map(int, ids)) for rid, ids in doc["by_rid"]}
    table.rid_times = {str(rid): float(at) for rid, at in doc["rid_times"]}
    table.forgotten_keys = {str(key): int(task_id) for key, task_id in doc["forgotten_keys"]}
    table.forgotten_times = deque((float(at), int(n)) for at, n in doc["forgotten_times"])
    table.finished = {str(queue): {} for queue in doc["finished_queues"]}
    for queue, task_id in doc["finished"]:
        table.finished[queue][int(task_id)] = None
    table.trimmed = {str(queue): {} for queue in doc["trimmed_queues"]}
    for queue, task_id, at in doc["trimmed"]:
        table.trimmed[queue][int(task_id)] = float(at)
    table.counts = {str(state): int(n) for state, n in doc["counts"].items()}
    table.queue_counts = {queue: dict(counts) for queue, counts in doc["queue_counts"]}
    table.running = {int(worker): set(ids) for worker, ids in doc["running"]}
    table.running_by_queue = {queue: int(n) for queue, n in doc["running_by_queue"]}
    table.drained = set(doc["drained"])
    if doc.get("configuration") is not None:  # (absent from snapshots before it)
        index, members = doc["configuration"]
        table.configuration = Configuration.from_json(members, int(index))
    for data in doc["schedules"]:
        schedule = _schedule(data)
        table.schedules.schedules[schedule.spec.name] = schedule
    table.rates.buckets = {q: Bucket(float(tokens), at) for q, tokens, at in doc["rates"]}
    stats = table.stats
    stats.submitted = Counter({(q, kind): n for q, kind, n in doc["submitted"]})
    stats.finished = Counter({(q, kind, end): n for q, kind, end, n in doc["finished_stats"]})
    stats.attempts_failed = Counter(dict(doc["attempts_failed"]))
    stats.run_seconds = Histogram(*doc["run_seconds"])
    stats.wait_seconds = Histogram(*doc["wait_seconds"])
    return table


def _schedule_json(schedule: Schedule) -> dict[str, Any]:
    return {
        "spec": schedule.spec.to_json(),
        "origin": schedule.origin,
        "created_at": schedule.created_at,
        "paused": schedule.paused,
        "last_due": schedule.last_due,
        "last_task": schedule.last_task,
        "fired": schedule.fired,
        "skipped": schedule.skipped,
        "runs": schedule.runs,
    }


def _schedule(data: dict[str, Any]) -> Schedule:
    return Schedule(
        ScheduleSpec.from_json(data["spec"]),
        float(data["origin"]),
        float(data["created_at"]),
        bool(data["paused"]),
        data["last_due"],
        data["last_task"],
        int(data["fired"]),
        dict(data["skipped"]),
        dict(data["runs"]),
    )
