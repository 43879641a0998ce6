"""The worker's side of execution, pure: which attempts this peer runs, and the results
it has not yet seen recorded.

A result stays here until the task table shows its attempt ended (the leader's `finish`
entry was applied, or the attempt was superseded or cancelled); until then it is sent to
the current leader at every heartbeat, so a result survives leader changes. Recording is
exactly-once per attempt because the task table ignores a `finish` for an attempt that
is not the running one.
"""

from __future__ import annotations

from peer.protocol.messages import ResultItem
from peer.protocol.tasks import TaskTable


class WorkerLedger:
    def __init__(self) -> None:
        self._unrecorded: dict[tuple[int, int], ResultItem] = {}
        self._fresh: list[ResultItem] = []

    def complete(self, item: ResultItem) -> None:
        key = (item.task, item.attempt)
        if key not in self._unrecorded:
            self._unrecorded[key] = item
            self._fresh.append(item)

    def take_fresh(self) -> list[ResultItem]:
        """Results completed since the last call (to send at once)."""
        fresh, self._fresh = self._fresh, []
        return fresh

    def unrecorded(self, table: TaskTable) -> list[ResultItem]:
        """Every result whose attempt still runs in the table (to send again)."""
        for key in list(self._unrecorded):
            task = table.tasks.get(key[0])
            if task is None or task.state != "running" or task.attempt != key[1]:
                del self._unrecorded[key]
        return list(self._unrecorded.values())
