"""A peer's view of the cluster, in the shape of `GET /cluster` (the driver adds its
process id, urls and recent events). Reads the core; changes nothing. Pure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from peer.protocol.records import TaskState

SCHEDULE_SUMMARY = ("name", "every", "cron", "paused", "next_due", "last_due", "fired")

if TYPE_CHECKING:
    from peer.protocol.core import PeerCore


def describe(core: PeerCore, now: float) -> dict[str, Any]:
    """Members with their status, role, term and log figures; this peer's own."""
    members = []
    config = core.configuration
    for peer in (core.id, *core.membership.others):
        digest = core.membership.digest(peer)
        seen = core.membership.last_seen(peer, now)
        members.append(
            {
                "id": peer,
                "status": core.membership.status(peer, now).value,
                "role": digest.role if digest else None,
                "term": digest.term if digest else None,
                "last_index": digest.last_index if digest else None,
                "commit_index": digest.commit_index if digest else None,
                "last_seen_ms": None if seen is None else round(seen * 1000),
                "drained": peer in core.tasks.drained,
                "voter": peer in config.voter_ids,
            }
        )
    return {
        "id": core.id,
        "role": core.election.role.value,
        "term": core.election.term,
        "leader": core.election.leader,
        "ready": core.leader_is_ready(),
        "commit_index": core.replicator.commit_index,
        "last_index": core.log.last_index,
        "log_base": core.log.base_index,  # entries up to here are compacted
        "snapshot_index": None
        if core.replicator.snapshot is None
        else core.replicator.snapshot.index,
        "catching_up": core.catching_up,
        "behind": core.behind,
        "queue_depth": core.tasks.counts[TaskState.QUEUED] + core.tasks.counts[TaskState.SCHEDULED],
        "tasks": {**core.tasks.counts, "forgotten": core.tasks.forgotten},
        "queues": {
            queue: {state: counts[state] for state in ("queued", "scheduled", "running")}
            for queue, counts in sorted(core.tasks.queue_counts.items())
        },
        "schedules": [
            {key: summary[key] for key in SCHEDULE_SUMMARY}
            for summary in (s.to_json() for _, s in sorted(core.tasks.schedules.schedules.items()))
        ],
        "members": members,
        "configuration": {**core.describe_configuration(), "member": core.id in config.ids},
    }
