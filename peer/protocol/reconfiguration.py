"""Membership changes in one peer's core: `Reconfiguration`, a part of `PeerCore`.

Raft's single-server changes (`peer.protocol.configuration`): the configuration in
force is the latest in the log (`ConfigLog`), and election, replication and gossip
follow it (`_follow_configuration`). A ready leader proposes a `Members` entry only
over a committed configuration, so one change is under way at a time; it promotes a
learner once it has caught up. A new leader serves only if its claim holds under the
configuration its synced log ends with (`_confirm_claim`). A leader whose removal is
committed resigns. Where to reach each peer (`addresses`) comes from the configurations
in the log and from non-members' own gossip. Pure, like the rest of the core.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from peer.protocol.commands import Command, Members
from peer.protocol.configuration import ChangeRefused, Configuration
from peer.protocol.events import MembersChanged
from peer.protocol.membership import Gossip, Status

if TYPE_CHECKING:
    from collections.abc import Iterable

    from election import BullyElection
    from peer.protocol.config_log import ConfigLog
    from peer.protocol.events import CoreEvent
    from peer.protocol.log import Entry, Log
    from peer.protocol.membership import MembershipTable
    from peer.protocol.replication import Replicator
    from peer.protocol.settings import Settings
    from peer.protocol.tasks import TaskTable

PROMOTE_LAG = 64  # entries a learner may lack of the commit index and still be promoted


class Reconfiguration:
    """The membership-change half of `PeerCore` (which sets every attribute below)."""

    id: int
    settings: Settings
    election: BullyElection
    replicator: Replicator
    membership: MembershipTable
    tasks: TaskTable
    log: Log
    configs: ConfigLog
    addresses_version: int
    _in_force: Configuration | None
    _urls_heard: dict[int, str]
    _events: list[CoreEvent]
    _now: float
    _wall: float

    def _propose(self, commands: list[Command], notify: Iterable[int] = ()) -> list[Entry]:
        raise NotImplementedError  # (PeerCore's)

    def _sync_roles(self) -> None:
        raise NotImplementedError  # (PeerCore's)

    @property
    def configuration(self) -> Configuration:
        """The configuration in force here: the latest in the log."""
        return self.configs.current(self.tasks)

    @property
    def committed_configuration(self) -> Configuration:
        return self.configs.committed(self.tasks)

    def describe_configuration(self) -> dict[str, object]:
        """The configuration in force as the API shows it (`GET /members`)."""
        return {**self.configuration.describe(), "committed": not self.configs.pending}

    def addresses(self) -> dict[int, str]:
        """Where to reach each peer: the members of the configurations in the log, and
        others that gossiped to this one (a leader its configuration lags behind)."""
        urls = dict(self._urls_heard)
        for config in (self.committed_configuration, *self.configs.pending):
            urls.update(config.urls())
        urls.pop(self.id, None)
        return {peer: url for peer, url in urls.items() if url}

    def _votes_in(self, config: Configuration) -> bool:
        return self.id in config.voter_ids

    def _follow_configuration(self) -> None:
        """Take in the log's changes; if the configuration in force changed, the
        election, replication and gossip follow it."""
        self.configs.follow(self.log, self.tasks)
        config = self.configuration
        if config is self._in_force or config == self._in_force:  # (`is`: the usual case)
            return
        first = self._in_force is None
        self._in_force = config
        voters, learners = config.voter_ids, config.learner_ids
        self.election.set_members(voters, learners, config.index)
        self.replicator.set_members(voters, learners, self._now)
        self.membership.set_members(config.ids)
        own = config.urls().get(self.id) or self.configs.bootstrap.urls().get(self.id, "")
        self.membership.set_local(url=own)
        self.addresses_version += 1
        if not first:
            self._events.append(
                MembersChanged(config.index, tuple(sorted(voters)), tuple(sorted(learners)))
            )

    def _applied_configuration(self) -> None:
        """After applying entries: a `Members` among them may be in force now; a leader
        whose removal is committed resigns (the remaining voters elect)."""
        self._follow_configuration()
        if self.replicator.leading and not self._votes_in(self.committed_configuration):
            self.election.resign()
            self._sync_roles()

    def _confirm_claim(self) -> bool:
        """Called by the replicator when this new leader's log is synced: whether the
        acks it was elected with are a majority of the configuration that log ends with
        (which may be newer than the one it counted them in)."""
        self._follow_configuration()
        return self.election.claim_holds(self.configuration.voter_ids)

    def _hear_url(self, gossip: Gossip) -> None:
        """A non-member's own digest names its url: kept, so this peer can answer it
        (a leader added while this peer was away reaches it before its log does)."""
        own = gossip.members[0] if gossip.members else None
        if own is None or own.id != gossip.sender or not own.url:
            return
        if gossip.sender in self.configuration.ids or gossip.sender == self.id:
            return
        if self._urls_heard.get(gossip.sender) != own.url and len(self._urls_heard) < 64:
            self._urls_heard[gossip.sender] = own.url
            self.addresses_version += 1

    def _propose_members(self, commands: list[Command]) -> list[Entry]:
        """A membership change, alone in its proposal: refused (`ChangeRefused`) unless
        it replaces the configuration in force, and that one is committed."""
        change = commands[0]
        if len(commands) != 1 or not isinstance(change, Members):
            raise ChangeRefused(409, "a membership change goes alone")
        current = self.configuration
        if self.configs.pending:
            raise ChangeRefused(409, "another membership change is under way")
        if change.base != current.index:
            raise ChangeRefused(409, "the configuration changed meanwhile")
        entries = self._propose(commands)
        self._follow_configuration()
        return entries

    def _promote_caught_up(self) -> None:
        """A learner alive, holding the entry that made it one, and within
        `PROMOTE_LAG` entries of the commit index becomes a voter (one at a time, as
        every change)."""
        config = self.configuration
        for learner in sorted(config.learner_ids):
            match = self.replicator.match_index(learner) or 0
            alive = self.membership.status(learner, self._now) is Status.ALIVE
            caught_up = match >= max(config.index, self.replicator.commit_index - PROMOTE_LAG)
            if alive and caught_up:
                change = Members(self._wall, config.index, config.promoted(learner))
                self._propose([change])
                self._follow_configuration()
                return
