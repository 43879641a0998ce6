"""Seeded fault schedules for the simulator, and the seed list a run covers.

`SIM_SEED=N` replays one seed; `SIM_SEEDS=K` sets how many a run covers (default 200).
"""

from __future__ import annotations

import os
import random

from tests.sim.cluster import SimCluster
from tests.sim.disk import DiskFaults
from tests.sim.network import Faults


def seeds(default: int = 200) -> list[int]:
    one = os.environ.get("SIM_SEED")
    if one is not None:
        return [int(one)]
    return list(range(int(os.environ.get("SIM_SEEDS", default))))


def random_faults(rng: random.Random) -> Faults:
    return Faults(
        loss=rng.choice([0.0, 0.02, 0.1, 0.25]),
        duplicate=rng.choice([0.0, 0.05, 0.2]),
        min_delay=0.001,
        max_delay=rng.choice([0.005, 0.02, 0.08]),
        long_delay=rng.choice([0.0, 0.0, 0.01, 0.05]),  # held up to seconds: stale on arrival
        replay=rng.choice([0.0, 0.01, 0.05]),
    )


def random_disk_faults(rng: random.Random) -> DiskFaults:
    return DiskFaults(slow=rng.choice([0.0, 0.1, 0.3]), refuse=rng.choice([0.0, 0.0, 0.05]))


def random_cluster_options(rng: random.Random) -> dict[str, object]:
    """Disk faults and wall clocks that differ between peers, for a `SimCluster`."""
    return {"disk_faults": random_disk_faults(rng), "wall_skew": rng.choice([0.0, 0.3])}


def random_snapshots(seed: int) -> dict[str, int]:
    """Snapshot settings for a run: often none (the default 20,000 entries is never
    reached), else a snapshot every few entries, kept a little or not at all, sent in
    small parts or whole. Drawn from their own stream, so the other draws of a seed
    stay the same."""
    rng = random.Random(f"snapshots-{seed}")
    if rng.random() < 0.3:
        return {}
    return {
        "snapshot_every": rng.choice([5, 12, 40, 0]),
        "snapshot_bytes": rng.choice([0, 0, 1500, 6000]),
        "snapshot_keep": rng.choice([0, 3, 20]),
        "snapshot_chunk": rng.choice([1000, 8000, 1 << 18]),
        # (drawn last, so the draws before stay the same): most runs keep the steps
        # fixed, since growing steps would make the small tables here snapshot rarely
        "snapshot_task_chars": rng.choice([0, 0, 0, 8, 32]),
    }


def random_partition(sim: SimCluster, rng: random.Random) -> str:
    ids = list(sim.ids)
    kind = rng.choice(["minority", "isolate_leader", "partial", "split", "one_way"])
    if kind == "one_way":
        a, b = rng.sample(ids, 2)
        sim.net.cut_one_way(a, b)
        return f"cut link {a}->{b} one way"
    if kind == "isolate_leader" and sim.leaders():
        leader = rng.choice(sim.leaders())
        sim.net.partition({leader}, set(ids) - {leader})
        return f"isolate leader {leader}"
    if kind == "partial":
        a, b = rng.sample(ids, 2)
        sim.net.cut_link(a, b)
        return f"cut link {a}-{b}"
    rng.shuffle(ids)
    k = rng.randint(1, len(ids) // 2) if kind == "minority" else rng.randint(1, len(ids) - 1)
    sim.net.partition(set(ids[:k]), set(ids[k:]))
    return f"partition {sorted(ids[:k])} | {sorted(ids[k:])}"


def apply_random_fault(sim: SimCluster, rng: random.Random) -> str:
    action = rng.choice(["crash", "restart", "partition", "partition", "heal", "pause", "wipe"])
    down = [i for i in sim.ids if i not in sim.nodes]
    if action == "pause" and sim.up:
        node, seconds = rng.choice(sim.up), rng.uniform(0.05, 1.0)
        sim.pause(node, seconds)
        return f"pause {node} for {seconds:.2f}s"
    if action == "wipe" and len(sim.up) > 1:
        victim = rng.choice(sim.up)
        if sim.can_wipe(victim):  # never more disk loss than the cluster can bear
            sim.wipe(victim)
            return f"wipe {victim}"
        action = "crash"
    if action == "crash" and len(sim.up) > 1:
        victim = rng.choice(sim.leaders() or sim.up) if rng.random() < 0.5 else rng.choice(sim.up)
        sim.crash(victim)
        return f"crash {victim}"
    if action == "restart" and down:
        node = rng.choice(down)
        sim.start(node)
        return f"restart {node}"
    if action == "partition":
        return random_partition(sim, rng)
    sim.net.heal()
    return "heal"


def run_random_faults(
    sim: SimCluster,
    rng: random.Random,
    history: list[str],
    rounds: tuple[int, int],
    propose_rate: float,
) -> None:
    """A second of calm, then `rounds` random faults with clients proposing, then heal
    everything, switch faults off and restart every crashed peer."""
    sim.run(1.0, propose_rate=propose_rate)
    for _ in range(rng.randint(*rounds)):
        history.append(f"t={sim.now:.2f} {apply_random_fault(sim, rng)}")
        sim.run(rng.uniform(0.2, 1.2), propose_rate=propose_rate)
    sim.net.heal()
    sim.net.faults = Faults()
    for node_id in sim.ids:
        if node_id not in sim.nodes:
            sim.start(node_id)
