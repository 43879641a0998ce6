"""Ring 1 for membership changes, piece by piece: the rules of a `Configuration`, the
configuration in force (`ConfigLog`: the latest in the log, reverted when a truncation
takes it), the election and the replicator under a configuration, and a core learning a
non-member's url from its gossip. Pure; driven directly."""

from __future__ import annotations

import random

import orjson
import pytest

from election import BullyElection, Phase, Role, Timings
from election.messages import Coordinator, CoordinatorAck, LogPosition, Probe, ProbeReply
from peer.protocol.commands import Members, Noop, encode_command
from peer.protocol.config_log import ConfigLog
from peer.protocol.configuration import ChangeRefused, Configuration
from peer.protocol.core import PeerCore
from peer.protocol.log import Entry, Log
from peer.protocol.membership import Gossip, MemberDigest
from peer.protocol.messages import AppendReply
from peer.protocol.replication import Replicator
from peer.protocol.settings import Settings
from peer.protocol.tasks import TaskTable

URLS = {1: "http://a:1", 2: "http://b:2", 3: "http://c:3"}
TIMINGS = Timings(heartbeat_interval=0.1, election_timeout=0.2, failure_timeout=0.5)


def test_a_configuration_changes_one_member_at_a_time_and_says_why_not() -> None:
    three = Configuration.of(URLS)
    four = three.with_learner(4, "http://d:4")
    assert four.voter_ids == {1, 2, 3} and four.learner_ids == {4} and four.majority() == 2
    promoted = four.promoted(4)
    assert promoted.voter_ids == {1, 2, 3, 4} and promoted.majority() == 3
    assert promoted.without(1).voter_ids == {2, 3, 4}
    refusals = [
        (lambda: three.with_learner(2, "http://x:9"), 409, "already a member"),
        (lambda: three.with_learner(4, "http://a:1"), 409, "already a member's address"),
        (lambda: three.promoted(2), 404, "not a learner"),
        (lambda: three.without(7), 404, "not a member"),
        (lambda: Configuration.of({1: "http://a:1"}).without(1), 409, "last voter"),
    ]
    for change, status, reason in refusals:
        with pytest.raises(ChangeRefused) as refused:
            change()
        assert refused.value.status == status and reason in str(refused.value)
    text = encode_command(Members(1.0, 0, four))
    assert Configuration.from_json(orjson.loads(text)) == four


def _log(*texts: str, term: int = 1) -> Log:
    return Log([Entry(term, i + 1, t) for i, t in enumerate(texts)])


def test_the_latest_configuration_in_the_log_is_in_force_until_a_truncation_takes_it() -> None:
    bootstrap = Configuration.of(URLS)
    configs, table = ConfigLog(bootstrap), TaskTable()
    added = bootstrap.with_learner(4, "http://d:4")
    log = _log(encode_command(Noop()), encode_command(Members(1.0, 0, added)))
    configs.follow(log, table)
    assert configs.current(table).learner_ids == {4}  # in force before it commits
    assert configs.committed(table) == bootstrap and len(configs.pending) == 1
    stale = Members(1.0, 7, bootstrap.without(3))  # over a configuration it is not in force
    log.merge((Entry(1, 3, encode_command(stale)),))
    configs.follow(log, table)
    assert configs.current(table).learner_ids == {4}  # ignored, as the table will
    log.merge((Entry(2, 2, encode_command(Noop())),))  # a newer leader's entry replaces it
    configs.follow(log, table)
    assert configs.current(table) == bootstrap and configs.pending == []
    for entry in log.slice(1, 3):  # applied: the table holds the committed one
        table.apply(entry.index, entry.command)
    configs.follow(log, table)
    assert configs.current(table) == bootstrap


def _election(node: int, voters: set[int], learners: set[int]) -> BullyElection:
    election = BullyElection(node, voters, TIMINGS, random.Random(1))
    election.set_members(voters, learners)
    return election


def test_a_learner_never_campaigns_and_a_campaign_from_a_non_voter_is_ignored() -> None:
    learner = _election(4, {1, 2, 3}, {4})
    assert not learner.is_voter
    for second in range(30):  # no leader heard for three seconds: it would campaign
        learner.tick(second / 10, {1, 2, 3, 4})
    assert learner.ready().messages == []
    voter = _election(1, {1, 2, 3}, {4})
    voter.step(0.0, Probe(1, 4, LogPosition()))
    voter.step(0.0, Coordinator(1, 4, LogPosition()))
    out = voter.ready()
    assert out.messages == [] and voter.voted_for is None  # no vote spent on it
    # a leader is followed whoever it is (a peer whose configuration lags must hear it)
    assert learner.leader_contact(1.0, 3, 9) and learner.leader == 9 and learner.term == 3


def test_an_ack_names_the_ackers_configuration_once_a_change_made_it() -> None:
    acker = _election(2, {1, 2, 3}, set())
    acker.step(0.0, Coordinator(1, 1, LogPosition()))
    assert acker.ready().messages[0].message == CoordinatorAck(1, 2, True, LogPosition())
    changed = _election(2, {1, 2, 3, 4}, set())
    changed.set_members({1, 2, 3, 4}, set(), version=7)
    changed.step(0.0, Coordinator(1, 1, LogPosition()))
    ack = changed.ready().messages[0].message
    assert ack == CoordinatorAck(1, 2, True, LogPosition(), 7, (1, 2, 3, 4))


def _claiming(node: int, voters: set[int], version: int = 0) -> BullyElection:
    """`node` (the highest) has won its probe and claims term 1 (its own ack counted)."""
    claimant = _election(node, voters, set())
    claimant.set_members(voters, set(), version)
    claimant.tick(0.0, voters)
    for peer in sorted(voters - {node}):
        claimant.step(0.0, ProbeReply(0, peer, 1, True))
    assert claimant.ready().messages and claimant.phase is Phase.CLAIMING
    return claimant


@pytest.mark.parametrize(
    ("newer_voters", "leads"),
    [((1, 2, 3, 4, 5), False), ((1, 2, 3, 4), False), ((2, 3), True), ((1, 2, 4), False)],
    ids=["two-added", "one-added", "shrunk-to-the-acks", "without-the-claimant"],
)
def test_a_claimant_leads_only_on_a_majority_of_the_newest_configuration_an_ack_names(
    newer_voters: tuple[int, ...], leads: bool
) -> None:
    """A peer that missed membership changes counts its acks in what it knows ({1, 2, 3}:
    3 and 2 are a majority), and in the newer configuration an ack names: a leader of that
    one may hold this very term."""
    claimant = _claiming(3, {1, 2, 3})
    claimant.step(0.0, CoordinatorAck(1, 2, True, LogPosition(), 9, newer_voters))
    assert (claimant.role is Role.LEADER) is leads
    older = _claiming(3, {1, 2, 3}, version=12)  # its own is newer than the ack's
    older.step(0.0, CoordinatorAck(1, 2, True, LogPosition(), 9, newer_voters))
    assert older.role is Role.LEADER


def test_a_synced_log_with_a_newer_configuration_recounts_the_claim_in_it() -> None:
    """The recount behind the ack check: a new leader whose synced log ends with a
    configuration where its acks are no majority does not serve (`_confirm_claim`)."""
    bootstrap = Configuration.of(URLS)
    four = bootstrap.with_learner(4, "http://d:4").promoted(4)
    core = PeerCore(1, (1, 2, 3), Settings(), random.Random(1), bootstrap=bootstrap)
    core.election._quorum.granted = {1, 2}  # its claim's acks  # noqa: SLF001
    assert core._confirm_claim()  # a majority of {1, 2, 3}  # noqa: SLF001
    core.log.merge((Entry(1, 1, encode_command(Members(1.0, 0, four))),))
    assert not core._confirm_claim()  # 2 of {1, 2, 3, 4}  # noqa: SLF001


def test_the_replicator_commits_on_a_majority_of_the_voters_only() -> None:
    log = Log()
    replicator = Replicator(1, (1, 2, 3), log)
    replicator.become_leader(0.0, 1, 1)
    replicator.persisted(0.0, 1, 1)  # its no-op, on its own disk
    replicator.set_members({1, 2, 3}, {4, 5}, 0.0)
    for learner in (4, 5):  # two learners hold it: no commit
        replicator.on_append_reply(0.0, AppendReply(1, learner, True, 1))
    assert replicator.commit_index == 0
    replicator.on_append_reply(0.0, AppendReply(1, 2, True, 1))
    assert replicator.commit_index == 1 and replicator.serving
    replicator.set_members({2, 3}, set(), 0.0)  # the leader being removed: not counted
    [entry] = replicator.propose(0.0, ["x"])
    replicator.persisted(0.0, entry.index, entry.term)
    replicator.on_append_reply(0.0, AppendReply(1, 2, True, entry.index))
    assert replicator.commit_index == 1  # its own copy and 2's: one of the voters 2, 3
    replicator.on_append_reply(0.0, AppendReply(1, 3, True, entry.index))
    assert replicator.commit_index == entry.index


def test_a_core_learns_the_url_of_a_non_member_from_its_own_gossip() -> None:
    core = PeerCore(2, (1, 2, 3), Settings(), random.Random(1), bootstrap=Configuration.of(URLS))
    version = core.addresses_version
    assert core.addresses() == {1: "http://a:1", 3: "http://c:3"}
    relayed = Gossip(3, (MemberDigest(3, 1, 1, url="http://c:3"), MemberDigest(7, 1, 1, url="x")))
    core.receive(0.0, relayed)  # 7's digest, relayed by 3: not its own word
    own = Gossip(6, (MemberDigest(6, 1, 1, url="http://f:6"),))
    core.receive(0.0, own)
    assert core.addresses() == {1: "http://a:1", 3: "http://c:3", 6: "http://f:6"}
    assert core.addresses_version > version
    assert 6 not in core.membership.others  # heard, not a member
