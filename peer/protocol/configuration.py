"""The cluster's membership configuration: who votes, who only follows, and where each
peer is reached. Pure data and the rules of changing it.

A `Configuration` lists the voters (they elect, and a majority of them commits) and the
learners (they receive the log and count for nothing until promoted), each with its URL.
The first one comes from `cluster.toml` (index 0); every later one is the content of a
committed `Members` entry (its index is the entry's). Changes go one at a time, Raft's
single-server way: a new peer joins as a learner, is promoted to voter once it has
caught up, and a peer is removed in one step; any two majorities of consecutive
configurations share a voter. `ChangeRefused` says why a change cannot be made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from peer.protocol.fields import CommandError, integer, text


class ChangeRefused(ValueError):
    """A membership change that cannot be made (the message says why); `status` is the
    HTTP status that fits (404: no such peer, 409: conflicts with the configuration)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    url: str


@dataclass(frozen=True, slots=True)
class Configuration:
    voters: tuple[Member, ...]
    learners: tuple[Member, ...] = ()
    index: int = 0  # the log index of the `Members` entry (0: cluster.toml's)

    @classmethod
    def of(
        cls, urls: dict[int, str], learners: Iterable[int] = (), index: int = 0
    ) -> Configuration:
        """Voters and learners from `urls` (id -> url); the ids in `learners` learn."""
        learning = set(learners)
        ordered = [Member(i, urls[i]) for i in sorted(urls)]
        return cls(
            tuple(m for m in ordered if m.id not in learning),
            tuple(m for m in ordered if m.id in learning),
            index,
        )

    @property
    def voter_ids(self) -> frozenset[int]:
        return frozenset(m.id for m in self.voters)

    @property
    def learner_ids(self) -> frozenset[int]:
        return frozenset(m.id for m in self.learners)

    @property
    def ids(self) -> frozenset[int]:
        return self.voter_ids | self.learner_ids

    def urls(self) -> dict[int, str]:
        return {m.id: m.url for m in (*self.voters, *self.learners)}

    def majority(self) -> int:
        return len(self.voters) // 2 + 1

    # -------------------------------------------------------------- changes

    def with_learner(self, peer: int, url: str) -> Configuration:
        """Add `peer` as a learner (it is promoted later, by the leader)."""
        known = self.urls().get(peer)
        if known is not None:
            raise ChangeRefused(409, f"peer {peer} is already a member (at {known})")
        if url in self.urls().values():
            raise ChangeRefused(409, f"{url} is already a member's address")
        learners = sorted((*self.learners, Member(peer, url)), key=lambda m: m.id)
        return replace(self, learners=tuple(learners), index=0)

    def promoted(self, peer: int) -> Configuration:
        """`peer`, a learner, becomes a voter."""
        member = next((m for m in self.learners if m.id == peer), None)
        if member is None:
            raise ChangeRefused(404, f"peer {peer} is not a learner")
        voters = sorted((*self.voters, member), key=lambda m: m.id)
        learners = tuple(m for m in self.learners if m.id != peer)
        return Configuration(tuple(voters), learners)

    def without(self, peer: int) -> Configuration:
        """`peer` (a voter or a learner) leaves; the last voter cannot."""
        if peer not in self.ids:
            raise ChangeRefused(404, f"peer {peer} is not a member")
        voters = tuple(m for m in self.voters if m.id != peer)
        if not voters:
            raise ChangeRefused(409, "the last voter cannot be removed")
        return Configuration(voters, tuple(m for m in self.learners if m.id != peer))

    # ---------------------------------------------------------------- codec

    def to_json(self) -> dict[str, Any]:
        return {
            "voters": [[m.id, m.url] for m in self.voters],
            "learners": [[m.id, m.url] for m in self.learners],
        }

    @classmethod
    def from_json(cls, data: Any, index: int = 0) -> Configuration:
        """A configuration's JSON, every field checked (`CommandError` otherwise)."""
        if not isinstance(data, dict):
            raise CommandError("members: must be an object")
        voters = _members(data.get("voters"), "voters")
        learners = _members(data.get("learners", []), "learners")
        ids = [m.id for m in (*voters, *learners)]
        if not voters or len(set(ids)) != len(ids):
            raise CommandError("members: needs a voter, and each id once")
        return cls(voters, learners, index)

    def describe(self) -> dict[str, Any]:
        """For the API: the lists with urls, and the entry it came from."""
        return {
            "index": self.index,
            "voters": [{"id": m.id, "url": m.url} for m in self.voters],
            "learners": [{"id": m.id, "url": m.url} for m in self.learners],
        }


def _members(value: Any, name: str) -> tuple[Member, ...]:
    if not isinstance(value, list):
        raise CommandError(f"{name}: must be a list")
    members = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise CommandError(f"{name}: each member is [id, url]")
        members.append(Member(integer(item[0], name), text(item[1], name)))
    return tuple(sorted(members, key=lambda m: m.id))
