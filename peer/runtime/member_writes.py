"""Membership writes on the ready leader: add a peer (as a learner), remove a member.

The change is made from the configuration in force and checked there (an id or url
already a member is 409, an unknown peer 404, the last voter stays); the core refuses
it too while another change is under way (409), so two racing requests never both go
in. Once applied (a majority of the voters has it on disk) the answer is the new
configuration. The leader promotes a learner by itself once it has caught up; a client
that wants to see it vote polls `GET /members`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from peer.protocol.commands import Members
from peer.protocol.configuration import ChangeRefused
from peer.runtime.schedule_writes import Answer, error_answer

if TYPE_CHECKING:
    from peer.runtime.node import Node
    from peer.runtime.service import Write

MEMBER_OPS = frozenset({"member_add", "member_remove"})


async def write_member(node: Node, write: Write) -> Answer:
    """`member_add` (task_id: the peer, name: its url) or `member_remove` (task_id)."""
    config = node.core.configuration
    if write.op == "member_add" and config.urls().get(write.task_id) == write.name:
        return 200, members_json(node)  # (already in: a retried request changes nothing)
    try:
        if write.op == "member_add":
            changed = config.with_learner(write.task_id, write.name)
        else:
            changed = config.without(write.task_id)
        applied = await node.propose(Members(time.time(), config.index, changed))
    except ChangeRefused as exc:
        code = "not_found" if exc.status == 404 else "conflict"
        return error_answer(exc.status, code, str(exc))
    if applied.outcome != "ok":
        return error_answer(409, "conflict", "the configuration changed meanwhile")
    return 200, members_json(node)


def members_json(node: Node) -> dict[str, object]:
    """The configuration in force on `node`, and whether it is committed."""
    return node.core.describe_configuration()
