"""Ring 2: the real election and membership code in a seeded simulated cluster.

Every step checks: at most one leader per term, no term ever goes backwards, and a peer
cut off from a majority for longer than the failure timeout (plus slack) does not lead.
After the faults end and the network heals, every running peer follows the highest
running id within a bounded time. A failure names its seed; `SIM_SEED=N` replays it.
"""

from __future__ import annotations

import random

import pytest

from tests.sim.cluster import SimCluster
from tests.sim.network import Faults
from tests.sim.schedule import apply_random_fault, random_cluster_options, random_faults, seeds

SETTLE = 6.0  # virtual seconds allowed to agree after healing


def _fail(seed: int, history: list[str], why: str) -> None:
    pytest.fail(f"seed {seed} (replay: SIM_SEED={seed}): {why}\n  " + "\n  ".join(history[-25:]))


@pytest.mark.parametrize("seed", seeds())
def test_random_faults_keep_one_leader_per_term_and_heal_to_highest_id(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([3, 5, 5, 7])
    lazy = rng.random() < 0.8  # as the driver ticks; else every step
    sim = SimCluster(size, seed, random_faults(rng), lazy_ticks=lazy, **random_cluster_options(rng))
    history: list[str] = [f"size {size}, faults {sim.net.faults}, lazy ticks {lazy}"]
    try:
        sim.run(1.0)
        for _ in range(rng.randint(4, 10)):
            history.append(f"t={sim.now:.2f} {apply_random_fault(sim, rng)}")
            sim.run(rng.uniform(0.2, 1.5))
        sim.net.heal()
        sim.net.faults = Faults()
        history.append(f"t={sim.now:.2f} heal all, faults off")
        if not sim.run_until(sim.agreed_on_highest, SETTLE):
            views = {i: (n.role.value, n.election.term, n.leader) for i, n in sim.nodes.items()}
            _fail(seed, history, f"no agreement on highest id after {SETTLE}s: {views}")
        for node_id in sim.ids:
            if node_id not in sim.nodes:
                sim.start(node_id)
        history.append(f"t={sim.now:.2f} restart all")
        if not sim.run_until(sim.agreed_on_highest, SETTLE):
            views = {i: (n.role.value, n.election.term, n.leader) for i, n in sim.nodes.items()}
            _fail(seed, history, f"no agreement after restarting all: {views}")
    except AssertionError as exc:
        if "replay" in str(exc):
            raise
        _fail(seed, history, str(exc))


def test_cluster_elects_highest_id_from_cold_start() -> None:
    sim = SimCluster(5, seed=1)
    assert sim.run_until(sim.agreed_on_highest, 3.0)
    assert sim.leaders() == [5]


def test_killed_leader_is_replaced_by_next_highest() -> None:
    sim = SimCluster(5, seed=2)
    assert sim.run_until(sim.agreed_on_highest, 3.0)
    sim.crash(5)
    crashed_at = sim.now
    assert sim.run_until(sim.agreed_on_highest, 3.0)
    assert sim.leaders() == [4]
    assert sim.now - crashed_at < 1.5


def test_minority_side_never_has_a_leader() -> None:
    sim = SimCluster(5, seed=3)
    assert sim.run_until(sim.agreed_on_highest, 3.0)
    sim.net.partition({4, 5}, {1, 2, 3})
    sim.run(3.0)
    assert sim.leaders() == [3]
    assert all(sim.nodes[i].leader != 5 for i in (1, 2, 3))


def test_isolated_peer_does_not_disrupt_the_leader() -> None:
    sim = SimCluster(5, seed=4)
    assert sim.run_until(sim.agreed_on_highest, 3.0)
    term = sim.nodes[5].election.term
    sim.net.partition({2}, {1, 3, 4, 5})
    sim.run(3.0)
    sim.net.heal()
    sim.run(2.0)
    assert sim.leaders() == [5]
    assert sim.nodes[5].election.term == term


def test_returning_highest_id_takes_the_lead_back() -> None:
    sim = SimCluster(5, seed=5)
    assert sim.run_until(sim.agreed_on_highest, 3.0)
    sim.crash(5)
    assert sim.run_until(lambda: sim.leaders() == [4], 3.0)
    sim.start(5)
    assert sim.run_until(sim.agreed_on_highest, 3.0)
    assert sim.leaders() == [5]


def test_partial_partition_still_elects_a_leader() -> None:
    """A sees B, B sees C, A does not see C: the cluster still settles on one leader."""
    sim = SimCluster(3, seed=6)
    assert sim.run_until(sim.agreed_on_highest, 3.0)
    sim.net.cut_link(3, 1)
    sim.crash(2)
    sim.start(2)
    sim.run(4.0)
    assert len(sim.leaders()) == 1


def test_idle_cluster_keeps_its_leader() -> None:
    sim = SimCluster(5, seed=7, faults=Faults(max_delay=0.01))
    assert sim.run_until(sim.agreed_on_highest, 3.0)
    term = sim.nodes[5].election.term
    sim.run(60.0)
    assert sim.leaders() == [5]
    assert sim.nodes[5].election.term == term


def test_higher_peer_cut_off_from_majority_does_not_block_the_cluster() -> None:
    """5 reaches only 4: it answers Alive but can never lead; 4 must lead after a bound."""
    sim = SimCluster(5, seed=8)
    for other in (1, 2, 3):
        sim.net.cut_link(5, other)
    assert sim.run_until(lambda: len(sim.leaders()) == 1 and 5 not in sim.leaders(), 10.0)
