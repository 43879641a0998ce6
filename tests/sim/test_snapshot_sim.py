"""Ring 2 for snapshots and compaction: peers snapshot every few entries and compact
their logs; a wiped peer comes back from the leader's snapshot, a restarted one from
its own plus the log's tail, and a new leader whose log sync source compacted what it
lacks installs that source's snapshot first. (The random-fault runs of
test_replication_sim and test_execution_sim also run most seeds with snapshots; every
step checks that two snapshots of one index are the same text.)"""

from __future__ import annotations

from peer.protocol.settings import Settings
from peer.protocol.snapshot import encode_table
from tests.sim.cluster import SimCluster

SNAPSHOTS = Settings(snapshot_every=10, snapshot_keep=2, snapshot_chunk=100)


def _tables(sim: SimCluster) -> dict[int, str]:
    return {i: encode_table(n.tasks) for i, n in sim.nodes.items()}


def _all_alike(sim: SimCluster) -> bool:
    tables = _tables(sim)
    return len(set(tables.values())) == 1 and len(tables) == len(sim.ids)


def _leader(sim: SimCluster) -> int:
    [leader] = [i for i, n in sim.nodes.items() if n.is_ready_leader]
    return leader


def _submit(sim: SimCluster, count: int) -> None:
    for _ in range(count):
        sim.propose()
        sim.step()
    wanted = sim.proposals
    assert sim.run_until(lambda: len(sim.acked) == wanted and _all_alike(sim), 5.0)


def test_a_wiped_peer_rejoins_from_the_leaders_snapshot() -> None:
    sim = SimCluster(3, seed=21, settings=SNAPSHOTS)
    assert sim.run_until(lambda: any(n.is_ready_leader for n in sim.nodes.values()), 3.0)
    _submit(sim, 60)
    leader = _leader(sim)
    assert sim.nodes[leader].log.base_index >= 50  # compacted: entry 1 is long gone
    victim = next(i for i in sim.ids if i != leader)
    assert sim.can_wipe(victim)
    sim.wipe(victim)
    sim.start(victim)
    assert sim.run_until(lambda: _all_alike(sim), 5.0)
    assert sim.installs[victim] == 1
    node = sim.nodes[victim]
    assert node.log.base_index >= 50 and node.replicator.commit_index == node.log.last_index
    _submit(sim, 10)  # and it goes on as a follower
    assert sim.nodes[victim].tasks.next_id == 71


def test_a_restarted_cluster_starts_from_its_snapshots_and_the_tails() -> None:
    sim = SimCluster(3, seed=22, settings=SNAPSHOTS)
    assert sim.run_until(lambda: any(n.is_ready_leader for n in sim.nodes.values()), 3.0)
    _submit(sim, 45)
    before = _tables(sim)
    for node_id in sim.ids:
        sim.crash(node_id)
    for node_id in sim.ids:
        assert sim.disks[node_id].snapshot is not None
        sim.start(node_id)
        node = sim.nodes[node_id]
        assert node.log.base_index > 0
        # the table is the snapshot's, then the tail up to the commit index stored
        stored = sim.disks[node_id].snapshot.index  # type: ignore[union-attr]
        assert stored <= node.tasks.applied_index <= node.log.last_index
    assert sim.run_until(lambda: any(n.is_ready_leader for n in sim.nodes.values()), 3.0)
    assert sim.run_until(lambda: _all_alike(sim), 3.0)
    after = next(iter(sim.nodes.values())).tasks
    assert [t.id for t in after.tasks.values()] == list(range(1, 46))
    assert not sim.installs  # nobody needed another's snapshot
    assert set(before.values()) != set()  # (the tables were compared before the crash)


def test_a_new_leader_whose_sync_source_compacted_installs_its_snapshot_first() -> None:
    """Peer 5 misses 60 entries while down; as it comes back leader 4 dies, so it wins
    with the acks of peers that compacted what it lacks: it must install the snapshot of
    its log sync source before it serves, or acknowledged work is lost."""
    sim = SimCluster(5, seed=13, settings=SNAPSHOTS)
    assert sim.run_until(lambda: sim.leaders() == [5] and sim.nodes[5].is_ready_leader, 3.0)
    sim.crash(5)
    assert sim.run_until(lambda: sim.leaders() == [4] and sim.nodes[4].is_ready_leader, 3.0)
    _submit_without_peer(sim, 60)
    sim.crash(4)
    sim.start(5)
    fetched = [False]

    def serving() -> bool:
        fetched[0] |= sim.nodes[5].replicator.sync_from is not None
        return sim.nodes[5].is_ready_leader

    assert sim.run_until(serving, 5.0)
    assert fetched[0] and sim.installs[5] == 1
    assert all(sim.nodes[5].tasks.key_holder(k) is not None for k in sim.acked)


def _submit_without_peer(sim: SimCluster, count: int) -> None:
    for _ in range(count):
        sim.propose()
        sim.step()
    wanted = sim.proposals
    assert sim.run_until(lambda: len(sim.acked) == wanted, 5.0)
    # a follower compacts once it hears of the commit (its next Append or heartbeat)
    # (or, if the leader compacted past what a spare held, once its snapshot is in)
    assert sim.run_until(lambda: all(n.log.base_index >= 50 for n in sim.nodes.values()), 3.0)
