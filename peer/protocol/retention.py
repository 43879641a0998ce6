"""Retention, the leader's part, pure: which finished tasks to trim and to forget.

A finished task is kept whole for `keep_finished` seconds after it ended; then it is
trimmed (`Trim`: its arguments, result and attempt records dropped) and kept so for
`keep_trimmed` more (by default as long again); then forgotten (`Forget`: it leaves the
table; its key keeps deduplicating for `keep_keys`). A queue holding more than
`max_finished` finished tasks forgets its oldest beyond that at once. The leader
decides on its timer ticks and writes the decision into the log, so every peer trims
and forgets the same tasks at the same index; what it proposed and has not seen applied
yet it does not propose again. Time comes in (the leader's wall clock); no I/O.
"""

from __future__ import annotations

from itertools import chain

from peer.protocol.commands import Command, Forget, Trim
from peer.protocol.records import Applied
from peer.protocol.settings import Settings
from peer.protocol.tasks import TaskTable


class Retention:
    def __init__(self, settings: Settings) -> None:
        self.keep = settings.keep_finished
        self.keep_trimmed = (
            settings.keep_trimmed if settings.keep_trimmed is not None else settings.keep_finished
        )
        self.max_finished = settings.max_finished
        self.keep_keys = settings.keep_keys
        self.batch = settings.max_forget
        self._proposed: set[int] = set()  # trimmed or forgotten, not applied yet

    @property
    def active(self) -> bool:
        return self.keep is not None or self.max_finished is not None

    def lead(self) -> None:
        """A new term of leadership: what an older one proposed is its log's business."""
        self._proposed.clear()

    def applied(self, entries: list[Applied]) -> None:
        for entry in entries:
            if entry.op in ("trim", "forget"):
                self._proposed.difference_update(entry.task_ids)

    def plan(self, wall: float, table: TaskTable) -> list[Command]:
        """This tick's retention commands (none when nothing is due)."""
        if not self.active:
            return []
        forget = self._over_the_cap(table) + self._trimmed_long_enough(wall, table)
        trim = self._ended_long_enough(wall, table, set(forget))
        commands: list[Command] = []
        if trim:
            commands.append(Trim(wall, tuple(trim)))
        if forget:
            commands.append(Forget(wall, tuple(forget), wall - self.keep_keys))
        self._proposed.update(trim, forget)
        return commands

    def _over_the_cap(self, table: TaskTable) -> list[int]:
        if self.max_finished is None:
            return []
        out: list[int] = []
        for queue, ended in table.finished.items():
            trimmed = table.trimmed.get(queue, {})
            excess = len(ended) + len(trimmed) - self.max_finished
            for task_id in chain(trimmed, ended) if excess > 0 else ():  # the oldest first
                if excess <= 0 or len(out) >= self.batch:
                    break
                excess -= 1
                if task_id not in self._proposed:
                    out.append(task_id)
        return out

    def _trimmed_long_enough(self, wall: float, table: TaskTable) -> list[int]:
        if self.keep_trimmed is None:
            return []
        out: list[int] = []
        for trimmed in table.trimmed.values():
            for task_id, trimmed_at in trimmed.items():
                if trimmed_at + self.keep_trimmed > wall or len(out) >= self.batch:
                    break  # (in the order they were trimmed: the rest are younger)
                if task_id not in self._proposed:
                    out.append(task_id)
        return out

    def _ended_long_enough(self, wall: float, table: TaskTable, skip: set[int]) -> list[int]:
        if self.keep is None:
            return []
        out: list[int] = []
        for ended in table.finished.values():
            for task_id in ended:
                task = table.tasks[task_id]
                if (task.finished_at or 0.0) + self.keep > wall or len(out) >= self.batch:
                    break  # (in the order they ended: the rest ended later)
                if task_id not in self._proposed and task_id not in skip:
                    out.append(task_id)
        return out
