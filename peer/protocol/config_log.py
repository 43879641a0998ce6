"""Which membership configuration is in force on one peer: `ConfigLog`.

Raft's rule: a peer uses the latest configuration in its log, committed or not. The
committed one is the task table's (the last `Members` entry applied, or the one a
snapshot holds; before any, cluster.toml's); the entries after the applied index are
scanned for `Members` texts as they arrive (a cheap prefix test on each). An entry that
a truncation or a snapshot replaced takes its configuration with it: the tail is then
scanned again from the applied index. A `Members` entry counts only over the very
configuration it was made from, exactly as the table will apply it. Pure.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from peer.protocol.commands import MEMBERS_PREFIX, CommandError, Members, decode_command
from peer.protocol.configuration import Configuration

if TYPE_CHECKING:
    from peer.protocol.log import Log
    from peer.protocol.tasks import TaskTable

SCAN_SLICE = 4096  # entries copied out of the log at a time while scanning


class ConfigLog:
    def __init__(self, bootstrap: Configuration) -> None:
        self.bootstrap = bootstrap  # cluster.toml's: in force until a Members entry
        self.pending: list[Configuration] = []  # in the log past the applied index
        self._scanned = (0, 0)  # (index, term) of the last entry looked at

    def committed(self, table: TaskTable) -> Configuration:
        return table.configuration or self.bootstrap

    def current(self, table: TaskTable) -> Configuration:
        """The configuration in force: the latest one in the log."""
        return self.pending[-1] if self.pending else self.committed(table)

    def follow(self, log: Log, table: TaskTable) -> None:
        """Take in what the log gained or lost, and what the table applied, since the
        last call."""
        applied = table.applied_index
        if self.pending and self.pending[0].index <= applied:
            self.pending = [c for c in self.pending if c.index > applied]
        index, term = self._scanned
        replaced = index > applied and log.term_at(index) != term
        if index < applied or replaced:
            self.pending = []  # (those past the applied index are scanned again)
            index = applied
        while index < log.last_index:
            entries = log.slice(index + 1, SCAN_SLICE)
            for entry in entries:
                if entry.command.startswith(MEMBERS_PREFIX):
                    self._take(entry.index, entry.command, table)
            index = entries[-1].index
        self._scanned = (index, log.term_at(index) or 0)

    def _take(self, index: int, text: str, table: TaskTable) -> None:
        try:
            command = decode_command(text)
        except CommandError:
            return  # (the table skips it too)
        if isinstance(command, Members) and command.base == self.current(table).index:
            self.pending.append(replace(command.configuration, index=index))
