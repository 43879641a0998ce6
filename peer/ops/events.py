"""The event feed of `run_cluster.py`: human events derived from successive `/cluster`
snapshots of every peer, and the views both the feed and the dashboard read from them.

Owns: the snapshot types, `Event`, `EventFeed`, and the pure readings of one set of
snapshots (`agreed_leadership`, `reference_view`). Pure: no I/O, no clock (times are passed
in), no rendering; polling and drawing are `peer.ops.dashboard`'s job.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

KEEP_EVENTS = 12

Snapshot = Mapping[str, Any]
Snapshots = Mapping[int, Snapshot | None]  # None: unreachable or not running


@dataclass(frozen=True, slots=True)
class Event:
    at: float
    text: str


def agreed_leadership(snapshots: Snapshots) -> tuple[int, int] | None:
    """The (leader, term) reported by more than half of the reachable peers, if any."""
    reachable = [s for s in snapshots.values() if s is not None]
    pairs = Counter(
        (s["leader"], s.get("term", 0)) for s in reachable if s.get("leader") is not None
    )
    for pair, count in pairs.most_common(1):
        if 2 * count > len(reachable):
            return pair
    return None


def reference_view(snapshots: Snapshots) -> Snapshot | None:
    """The leader's view if reachable, else the reachable view with the highest term."""
    leadership = agreed_leadership(snapshots)
    if leadership is not None and snapshots.get(leadership[0]) is not None:
        return snapshots[leadership[0]]
    views = [s for s in snapshots.values() if s is not None]
    return max(views, key=lambda s: s.get("term", 0), default=None)


class EventFeed:
    """Turns successive `/cluster` snapshots into human events; keeps the last few."""

    def __init__(
        self, keep: int = KEEP_EVENTS, on_event: Callable[[Event], None] | None = None
    ) -> None:
        self.recent: deque[Event] = deque(maxlen=keep)
        self._on_event = on_event
        self._seen: set[int] = set()
        self._pids: dict[int, Any] = {}
        self._election_term = 0
        self._leadership: tuple[int, int] | None = None
        self._leadership_known = False

    def update(self, snapshots: Snapshots, now: float) -> list[str]:
        """Record and return the events between the previous snapshots and these."""
        texts = [
            *self._presence(snapshots),
            *self._elections(snapshots),
            *self._leader_change(snapshots),
        ]
        for text in texts:
            self.note(now, text)
        return texts

    def note(self, now: float, text: str) -> None:
        event = Event(now, text)
        self.recent.append(event)
        if self._on_event is not None:
            self._on_event(event)

    def _presence(self, snapshots: Snapshots) -> Iterator[str]:
        for node_id, snap in sorted(snapshots.items()):
            was_up = node_id in self._pids
            if snap is None:
                if was_up:
                    del self._pids[node_id]
                    yield f"peer {node_id} stopped"
                continue
            pid = snap.get("pid")
            if not was_up:
                yield (
                    f"peer {node_id} is back" if node_id in self._seen else f"peer {node_id} is up"
                )
            elif self._pids[node_id] != pid:
                yield f"peer {node_id} restarted"
            self._seen.add(node_id)
            self._pids[node_id] = pid

    def _elections(self, snapshots: Snapshots) -> Iterator[str]:
        for node_id, snap in sorted(snapshots.items()):
            if snap is None or snap.get("role") != "candidate":
                continue
            term = int(snap.get("term", 0))
            if term > self._election_term:
                self._election_term = term
                yield f"election: term {term} started by {node_id}"

    def _leader_change(self, snapshots: Snapshots) -> Iterator[str]:
        reachable = [s for s in snapshots.values() if s is not None]
        if not reachable:
            return
        current = agreed_leadership(snapshots)
        if current is None and any(s.get("leader") is not None for s in reachable):
            return  # the peers disagree for now; wait for them to settle
        if self._leadership_known and current == self._leadership:
            return
        self._leadership, self._leadership_known = current, True
        if current is None:
            yield "no leader"
        else:
            self._election_term = max(self._election_term, current[1])
            yield f"peer {current[0]} leads, term {current[1]}"
