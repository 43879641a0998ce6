"""The in-memory replicated log: entries and their terms (the messages that move them
are in `peer.protocol.messages`).

An entry's `command` is the encoded text of a log command (`peer.protocol.commands`);
the log never looks inside it. Index 0 is the empty prefix (term 0). Pure data and
bookkeeping, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    command: str


class Log:
    """Entries 1..last_index, in order."""

    def __init__(self, entries: list[Entry] | None = None) -> None:
        self.entries: list[Entry] = list(entries or [])

    @property
    def last_index(self) -> int:
        return len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else 0

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`; 0 for index 0; None past the end."""
        if index == 0:
            return 0
        if 0 < index <= len(self.entries):
            return self.entries[index - 1].term
        return None

    def slice(self, start: int, limit: int) -> tuple[Entry, ...]:
        """Up to `limit` entries from index `start` on."""
        return tuple(self.entries[start - 1 : start - 1 + limit])

    def append(self, term: int, command: str) -> Entry:
        entry = Entry(term, self.last_index + 1, command)
        self.entries.append(entry)
        return entry

    def truncate_after(self, index: int) -> None:
        del self.entries[index:]

    def merge(self, entries: tuple[Entry, ...]) -> int | None:
        """Add `entries` (consecutive); drop a conflicting suffix first.

        Returns the index the log was truncated after, or None if nothing was dropped.
        """
        truncated = None
        for entry in entries:
            existing = self.term_at(entry.index)
            if existing == entry.term:
                continue
            if existing is not None:
                self.truncate_after(entry.index - 1)
                truncated = entry.index - 1
            self.entries.append(entry)
        return truncated
