"""The in-memory replicated log: entries and their terms (the messages that move them
are in `peer.protocol.messages`).

An entry's `command` is the encoded text of a log command (`peer.protocol.commands`);
the log never looks inside it. The log may start after a base (`base_index`,
`base_term`): the entries up to the base were compacted into a snapshot
(`peer.protocol.snapshot`); index 0 is the empty prefix (term 0). Pure data and
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
    """Entries base_index+1..last_index, in order (`entries` holds just those)."""

    def __init__(
        self, entries: list[Entry] | None = None, base_index: int = 0, base_term: int = 0
    ) -> None:
        self.entries: list[Entry] = list(entries or [])
        self.base_index = base_index
        self.base_term = base_term
        if self.entries and self.entries[0].index != base_index + 1:
            raise ValueError(f"the log after {base_index} starts at {self.entries[0].index}")

    @property
    def last_index(self) -> int:
        return self.base_index + len(self.entries)

    @property
    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.base_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`; the base's term at the base (0 for index
        0); None past the end and before the base (compacted)."""
        offset = index - self.base_index
        if offset == 0:
            return self.base_term
        if 0 < offset <= len(self.entries):
            return self.entries[offset - 1].term
        return None

    def entry(self, index: int) -> Entry | None:
        """The entry at `index`, if the log holds it (not compacted, not past the end)."""
        offset = index - self.base_index
        return self.entries[offset - 1] if 0 < offset <= len(self.entries) else None

    def slice(self, start: int, limit: int) -> tuple[Entry, ...]:
        """Up to `limit` entries from index `start` on (`start` after the base)."""
        offset = start - self.base_index
        if offset < 1:
            raise IndexError(f"entry {start} is compacted (the log starts after {self.base_index})")
        return tuple(self.entries[offset - 1 : offset - 1 + limit])

    def append(self, term: int, command: str) -> Entry:
        entry = Entry(term, self.last_index + 1, command)
        self.entries.append(entry)
        return entry

    def truncate_after(self, index: int) -> None:
        if index < self.base_index:
            raise IndexError(f"cannot truncate below the base {self.base_index}")
        del self.entries[index - self.base_index :]

    def merge(self, entries: tuple[Entry, ...]) -> int | None:
        """Add `entries` (consecutive, after the base); drop a conflicting suffix first.

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

    def compact(self, index: int) -> None:
        """Drop the entries up to `index` (a snapshot holds what they did)."""
        if index <= self.base_index:
            return
        term = self.term_at(index)
        if term is None:
            raise IndexError(f"cannot compact to {index}: the log ends at {self.last_index}")
        del self.entries[: index - self.base_index]
        self.base_index, self.base_term = index, term

    def reset_to(self, index: int, term: int) -> bool:
        """Start after a snapshot at (`index`, `term`) received from another peer: the
        entries after it are kept if the log holds that very entry (Raft section 7),
        else the whole log goes. True if entries after the snapshot were kept."""
        if index >= self.base_index and self.term_at(index) == term:
            self.compact(index)
            return bool(self.entries)
        self.entries = []
        self.base_index, self.base_term = index, term
        return False
