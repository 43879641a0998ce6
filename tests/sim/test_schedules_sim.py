"""Ring 2 for periodic tasks: a schedule keeps ticking while peers crash, restart, pause
and are partitioned, leaders change, disks are slow and wall clocks differ.

Once the cluster heals, on every peer: every tick of the schedule from its origin up to
its last fired tick has exactly one task (its key names the tick), with no gap (catch-up
`all`, within `max_catch_up`) and no duplicate, and all peers agree. `SIM_SEED=N`
replays one seed.
"""

from __future__ import annotations

import random

import pytest

from peer.protocol.commands import SchedulePause, SchedulePut, ScheduleSpec, TaskSpec
from peer.protocol.schedules import tick_key
from tests.sim.cluster import SimCluster
from tests.sim.schedule import random_cluster_options, random_faults, run_random_faults, seeds

EVERY = 0.5
SETTLE = 10.0


def _paused_everywhere(sim: SimCluster) -> bool:
    last = max(n.log.last_index for n in sim.nodes.values())
    return all(
        n.tasks.applied_index == last and n.tasks.schedules.schedules["s"].paused
        for n in sim.nodes.values()
    )


def _put_again(sim: SimCluster, spec: ScheduleSpec) -> bool:
    """True once a leader holds the schedule (a client retrying its put until then)."""
    if any("s" in n.tasks.schedules.schedules for n in sim.nodes.values() if n.is_ready_leader):
        return True
    if sim.now % 0.5 < 0.01:  # a client retry every half second; a put is idempotent
        sim.propose_command(SchedulePut(sim.now, spec))
    return False


def _ticks(sim: SimCluster, node_id: int) -> list[float]:
    tasks = sim.nodes[node_id].tasks.tasks.values()
    return sorted(t.due for t in tasks if t.schedule == "s" and t.due is not None)


@pytest.mark.parametrize("seed", seeds(60))
def test_every_tick_fires_exactly_once_through_faults(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.choice([3, 5])
    sim = SimCluster(size, seed, random_faults(rng), **random_cluster_options(rng))
    history = [f"size {size}, faults {sim.net.faults}"]
    spec = ScheduleSpec("s", TaskSpec("echo", {"tick": True}), every=EVERY, catch_up="all")
    try:
        assert sim.run_until(lambda: sim.propose_command(SchedulePut(sim.now, spec)), 5.0)
        put = f"cmd{sim.proposals}"
        # the client's put is acknowledged (committed) before the faults start; on a
        # lossy network that can take a few resends, so it is proposed again meanwhile
        acked = sim.run_until(lambda: put in sim.acked or _put_again(sim, spec), 5.0)
        assert acked, "the schedule was never acknowledged"
        run_random_faults(sim, rng, history, (2, 6), propose_rate=0.0)
        history.append(f"t={sim.now:.2f} heal, restart all")
        sim.run(SETTLE)
        assert sim.run_until(lambda: sim.propose_command(SchedulePause(sim.now, "s", True)), 5.0)
        assert sim.run_until(lambda: _paused_everywhere(sim), 5.0), "the pause did not settle"
        leader = next(i for i, n in sim.nodes.items() if n.is_ready_leader)
        book = sim.nodes[leader].tasks.schedules.schedules["s"]
        expected = [book.origin + k * EVERY for k in range(1, book.fired + 1)]
        for node_id in sim.nodes:
            ticks = _ticks(sim, node_id)
            assert len(ticks) == len(set(ticks)), f"peer {node_id}: a tick fired twice"
            assert ticks == pytest.approx(expected), f"peer {node_id}: a gap in the ticks"
            keys = {t.key for t in sim.nodes[node_id].tasks.tasks.values() if t.schedule}
            assert keys == {tick_key("s", due) for due in ticks}
        assert book.fired >= (sim.now - book.origin) / EVERY - 12  # it kept up to the pause
        assert book.skipped == {}
    except AssertionError as exc:
        pytest.fail(f"seed {seed} (replay: SIM_SEED={seed}): {exc}\n  " + "\n  ".join(history))
