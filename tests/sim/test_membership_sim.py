"""Ring 2 for membership changes: a new peer joins as a learner, catches up (by the
leader's snapshot) and is promoted; a member, the leader among them, is removed; and
changes run alongside random crashes, wipes, partitions and message loss.

Besides the invariants every step checks (one leader per term, a committed entry never
changes, commits on a majority of the configuration in force, no leader in a minority
of its own configuration), a ready leader has at most one change uncommitted and never
leads once its removal is committed. `SIM_SEED=N` replays one seed.
"""

from __future__ import annotations

import random

import pytest

from peer.protocol.settings import Settings
from tests.sim.cluster import SimCluster
from tests.sim.schedule import (
    apply_random_fault,
    random_cluster_options,
    random_faults,
    random_snapshots,
    seeds,
)

SNAPSHOTS = Settings(snapshot_every=10, snapshot_keep=2, snapshot_chunk=100)
SETTLE = 10.0


def _ready_leader(sim: SimCluster) -> int | None:
    ready = [i for i, n in sim.nodes.items() if n.is_ready_leader]
    return ready[0] if ready else None


def _submit(sim: SimCluster, count: int) -> None:
    for _ in range(count):
        sim.propose()
        sim.step()


def _acked_tasks(sim: SimCluster) -> set[str]:
    return {k for k in sim.acked if not k.startswith("cmd")}  # (not the changes)


def _all_acked_everywhere(sim: SimCluster, among: set[int] | None = None) -> bool:
    peers = sim.nodes if among is None else {i: sim.nodes[i] for i in among}
    keys = _acked_tasks(sim)
    return all(all(k in n.tasks.by_key for k in keys) for n in peers.values())


def _all_acked(sim: SimCluster) -> bool:
    """Every proposal was acknowledged (each was made with a ready leader running)."""
    return len(sim.acked) == sim.proposals


def _everyone_has(sim: SimCluster, voters: set[int], peers: set[int] | None = None) -> bool:
    """Every running one of `peers` (default: the voters) has committed `voters`."""
    return all(
        sim.nodes[i].committed_configuration.voter_ids == voters
        for i in (voters if peers is None else peers)
        if i in sim.nodes
    )


def test_a_new_peer_joins_as_a_learner_by_snapshot_is_promoted_and_leads() -> None:
    sim = SimCluster(5, seed=31, settings=SNAPSHOTS)
    assert sim.run_until(lambda: _ready_leader(sim) == 5, 3.0)
    _submit(sim, 60)
    new = sim.add_peer()
    assert sim.nodes[new].election.is_voter is False  # it joins as a learner
    for _ in range(30):  # it asks nobody to vote for it, and nobody leads for it
        sim.step()
        assert sim.nodes[new].role.value == "follower"
    assert sim.add_member(new)
    sim.run(0.05)
    learner = sim.nodes[5].configuration
    assert learner.learner_ids == {new} and new not in learner.voter_ids
    promoted = lambda: _everyone_has(sim, {1, 2, 3, 4, 5, 6})  # noqa: E731
    assert sim.run_until(promoted, 5.0), sim.nodes[5].configuration
    assert sim.installs[new] == 1  # it caught up from the leader's snapshot
    # bully's rule over the members: the new highest id takes the lead, with everything
    assert sim.run_until(lambda: _ready_leader(sim) == new, 5.0)
    _submit(sim, 20)
    assert sim.run_until(lambda: _all_acked(sim) and _all_acked_everywhere(sim), 5.0)
    assert [s.index for s in sim.refusals] == []


def test_a_removed_follower_learns_it_is_out_and_the_rest_goes_on() -> None:
    sim = SimCluster(5, seed=32)
    assert sim.run_until(lambda: _ready_leader(sim) == 5, 3.0)
    _submit(sim, 20)
    assert sim.remove_member(1)
    assert sim.run_until(lambda: _everyone_has(sim, {2, 3, 4, 5}), 3.0)
    assert sim.run_until(lambda: 1 not in sim.nodes[1].configuration.ids, 3.0)
    assert sim.nodes[1].election.is_voter is False
    assert _ready_leader(sim) == 5  # no leader change: it did not need one
    sim.crash(1)
    sim.crash(2)  # 3 of the 4 voters left run: a majority of the new configuration
    _submit(sim, 20)
    assert sim.run_until(lambda: _all_acked(sim) and _all_acked_everywhere(sim, {3, 4, 5}), 5.0)
    assert sim.nodes[5].replicator.match_index(1) is None  # (no longer sent anything)


def test_a_removed_leader_commits_its_removal_then_resigns() -> None:
    sim = SimCluster(5, seed=33)
    assert sim.run_until(lambda: _ready_leader(sim) == 5, 3.0)
    _submit(sim, 20)
    assert sim.remove_member(5)
    assert sim.run_until(lambda: _ready_leader(sim) == 4, 5.0)
    assert 5 not in sim.nodes[4].committed_configuration.ids
    assert sim.nodes[5].election.is_voter is False
    for _ in range(100):  # the removed peer never campaigns, never leads again
        sim.step()
        assert 5 not in sim.leaders()
    _submit(sim, 20)
    assert sim.run_until(lambda: _all_acked(sim) and _all_acked_everywhere(sim, {1, 2, 3, 4}), 5)


def test_a_second_change_waits_for_the_first() -> None:
    sim = SimCluster(3, seed=34)
    assert sim.run_until(lambda: _ready_leader(sim) == 3, 3.0)
    new = sim.add_peer()
    assert sim.add_member(new)
    assert sim.remove_member(1)  # proposed in the same cycle: refused
    sim.step()
    assert [str(r) for r in sim.refusals] == ["another membership change is under way"]
    assert sim.run_until(lambda: _everyone_has(sim, {1, 2, 3, 4}), 5.0)


REGRESSIONS = [
    217,  # an old leader's ack released after a newer leader's truncation (writes.py)
    532,  # a log sync whose source the synced log removed: its lost fetch never resent
]


@pytest.mark.parametrize("seed", seeds(60))
def test_membership_changes_under_random_faults(seed: int) -> None:
    """Peers join, are promoted and are removed while peers crash, restart, are wiped
    and partitioned; every acknowledged command ends up on every member."""
    _random_membership_run(seed)


@pytest.mark.parametrize("seed", REGRESSIONS)
def test_membership_seeds_that_found_bugs(seed: int) -> None:
    _random_membership_run(seed)


def _random_membership_run(seed: int) -> None:
    rng = random.Random(seed)
    settings = Settings(**random_snapshots(seed))
    options = random_cluster_options(rng)
    sim = SimCluster(rng.choice([3, 4, 5]), seed, random_faults(rng), settings, **options)
    history = [f"size {len(sim.ids)}, faults {sim.net.faults}, {settings}"]
    try:
        sim.run(1.0, propose_rate=0.3)
        for _ in range(rng.randint(4, 9)):
            if rng.random() < 0.5:
                history.append(f"t={sim.now:.2f} {_random_change(sim, rng)}")
            else:
                history.append(f"t={sim.now:.2f} {apply_random_fault(sim, rng)}")
            sim.run(rng.uniform(0.2, 1.2), propose_rate=0.3)
        sim.net.heal()
        sim.net.faults = type(sim.net.faults)()
        for node_id in sim.ids:
            if node_id not in sim.nodes:
                sim.start(node_id)
        history.append(f"t={sim.now:.2f} heal, restart all; acked {len(sim.acked)}")
        assert sim.run_until(lambda: _settled(sim), SETTLE), "acked entry missing"
        sim.check_logs()
    except AssertionError as exc:
        pytest.fail(f"seed {seed} (replay: SIM_SEED={seed}): {exc}\n  " + "\n  ".join(history))


def _random_change(sim: SimCluster, rng: random.Random) -> str:
    leader = _ready_leader(sim)
    if leader is None:
        return "no ready leader for a change"
    config = sim.nodes[leader].configuration
    outsiders = [i for i in sim.ids if i not in config.ids and i in sim.nodes]
    if rng.random() < 0.5 and len(config.voters) > 2:
        victim = rng.choice(sorted(config.ids))
        return f"remove {victim}: {'proposed' if sim.remove_member(victim) else 'refused'}"
    new = rng.choice(outsiders) if outsiders and rng.random() < 0.3 else sim.add_peer()
    return f"add {new}: {'proposed' if sim.add_member(new) else 'refused'}"


def _settled(sim: SimCluster) -> bool:
    """A ready leader whose committed configuration every running member shares, and
    every acknowledged command on each of them."""
    leader = _ready_leader(sim)
    if leader is None:
        return False
    members = sim.nodes[leader].committed_configuration.ids
    running = {i for i in members if i in sim.nodes}
    return _all_acked_everywhere(sim, running)


def test_a_change_commits_only_on_a_majority_of_the_configuration_it_makes() -> None:
    """Raft's rule: a configuration is in force from the moment its entry is in the log.
    Three voters and a caught-up learner; the moment the leader proposes the learner's
    promotion, the learner and one voter are cut off: the two left are a majority of the
    old voters, not of the four the promotion makes, so it must not commit."""
    sim = SimCluster(3, seed=35)
    assert sim.run_until(lambda: _ready_leader(sim) == 3, 3.0)
    new = sim.add_peer()
    assert sim.add_member(new)
    assert sim.run_until(lambda: new in sim.voters(3), 5.0)  # proposed (maybe not committed)
    promotion = sim.nodes[3].configuration.index
    sim.net.partition({1, new}, {2, 3})
    for _ in range(100):
        sim.step()
        assert all(n.replicator.commit_index < promotion for n in sim.nodes.values())
    sim.net.heal()
    assert sim.run_until(lambda: _everyone_has(sim, {1, 2, 3, new}), 5.0)


def test_a_leader_whose_synced_log_brings_a_newer_configuration_rechecks_its_claim() -> None:
    """Peer 1 misses two changes (4, then 5 added), and 2 misses the second; the entries
    after it commit on 3, 4 and 5, which then crash. Peer 1, in the oldest configuration
    ({1, 2, 3}), gets 2's ack: a majority of the configuration it knows. But the ack
    names 2's newer one ({1, 2, 3, 4}), where {1, 2} is no majority, so 1 does not lead
    (it lacks what 3, 4 and 5 committed, and would overwrite it)."""
    sim = SimCluster(3, seed=36)
    assert sim.run_until(lambda: _ready_leader(sim) == 3, 3.0)
    sim.net.partition({1}, {2, 3})
    four = sim.add_peer()
    sim.net.cut_link(1, four)
    assert sim.add_member(four)
    voters = {1, 2, 3, four}
    assert sim.run_until(lambda: _everyone_has(sim, voters, {2, 3, four}) and _ready_leader(sim), 5)
    five = sim.add_peer()
    sim.net.cut_link(1, five)
    assert sim.add_member(five)
    learning = lambda: five in sim.nodes[four].committed_configuration.learner_ids  # noqa: E731
    assert sim.run_until(learning, 3.0)
    sim.net.partition({1, 2}, {3, four, five})  # 2 holds the learner's entry, no more
    voters = {1, 2, 3, four, five}
    assert sim.run_until(
        lambda: _everyone_has(sim, voters, {3, four, five}) and _ready_leader(sim), 5
    )
    _submit(sim, 10)
    assert sim.run_until(lambda: _all_acked(sim), 3.0)
    missing = max(e for e in sim.committed)  # committed on 3, 4 and 5 only
    assert sim.nodes[2].log.last_index < missing and sim.nodes[1].log.last_index < missing
    for peer in (3, four, five):
        sim.crash(peer)
    sim.run(0.5)  # what the crashed peers had sent is delivered or dropped, still cut off
    sim.net.heal()
    for _ in range(500):
        sim.step()
        assert not any(n.is_ready_leader for n in sim.nodes.values())
        # 2's ack names its newer configuration, where {1, 2} is no majority: 1 does not
        # lead (it once did, and stood down only at its log sync's recount)
        assert sim.nodes[1].role.value != "leader"
    # peer 3 comes back with every committed entry: a leader of the old configuration
    # would overwrite them there
    sim.start(3)
    assert sim.run_until(lambda: _ready_leader(sim) is not None, 5.0)
    assert sim.run_until(lambda: _all_acked_everywhere(sim, {1, 2, 3}), 5.0)
    sim.check_logs()


def test_a_peer_that_missed_two_changes_never_leads_a_term_already_led() -> None:
    """Peer 1 is cut off while 4 and then 5 join ({1, 2, 3} is all it knows); 2 is cut off
    too before 5, the highest, takes over from the leader in a new term with 3 and 4.
    When 3, 4 and 5 crash, 1 and 2 meet: neither heard of that term, and {1, 2} is a
    majority of 1's configuration, so 1 claims the same term, and 2 acks it. Whether 2
    missed that term depends on timing, so seeds are tried until three set the scene."""
    scenes = sum(_two_changes_missed(seed) for seed in range(1, 41))
    assert scenes >= 3


def _two_changes_missed(seed: int) -> bool:
    """The scene above at `seed`; False when its timing did not set it (2 heard of 5's
    term). The simulator checks every step: no second leader of any term."""
    sim = SimCluster(3, seed=seed)
    assert sim.run_until(lambda: _ready_leader(sim) == 3, 3.0)
    sim.net.partition({1}, {2, 3})
    for _ in range(2):
        new = sim.add_peer()
        sim.net.cut_link(1, new)
        assert sim.add_member(new)
        voters = {1, 2, 3, *range(4, new + 1)}
        settled = lambda v=voters: _everyone_has(sim, v, v - {1}) and _ready_leader(sim)  # noqa: E731
        assert sim.run_until(settled, 5.0)
    sim.net.partition({1}, {2}, {3, 4, 5})
    assert sim.run_until(lambda: _ready_leader(sim) == 5, 5.0)
    led = sim.nodes[5].election.term
    if not (sim.nodes[2].election.term < led and sim.nodes[1].election.term < led):
        return False
    for peer in (3, 4, 5):
        sim.crash(peer)
    sim.run(0.5)
    sim.net.partition({1, 2}, {3, 4, 5})
    sim.run(3.0)
    assert not any(n.is_ready_leader for n in sim.nodes.values())  # {1, 2} of 5 voters
    return True
