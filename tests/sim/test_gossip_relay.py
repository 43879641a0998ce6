"""Ring 2: gossip relayed through a heard leader, and the fallback when it goes quiet.

While a leader is heard, a follower gossips only to the leader (its own digest, with its
append reply) and learns of the others from the leader's digest, which travels with the
leader's heartbeats. Nobody may look suspect or dead meanwhile; when the leader dies,
the followers gossip with each other again before any of them could be held dead.
"""

from __future__ import annotations

from typing import Any

from peer.protocol.commands import Noop
from peer.protocol.core import RELAY_SLACK
from peer.protocol.membership import Gossip, Status
from peer.protocol.messages import Append, AppendReply, Results
from tests.sim.cluster import SimCluster
from tests.sim.network import Faults

Sent = tuple[float, int, int, Any]  # (time, from, to, message)


def recording(sim: SimCluster) -> list[Sent]:
    """Every message the cluster sends from now on."""
    sent: list[Sent] = []
    send = sim.net.send

    def record(now: float, src: int, dst: int, message: Any) -> None:
        sent.append((now, src, dst, message))
        send(now, src, dst, message)

    sim.net.send = record  # type: ignore[method-assign]
    return sent


def settled(size: int = 5, seed: int = 11) -> SimCluster:
    sim = SimCluster(size, seed, Faults(max_delay=0.01))
    assert sim.run_until(sim.agreed_on_highest, 5.0)
    sim.run(1.0)  # past the takeover's catch-up
    return sim


def statuses(sim: SimCluster, peers: list[int]) -> set[Status]:
    return {sim.nodes[a].membership.status(b, sim.now) for a in peers for b in peers}


def test_followers_gossip_only_to_the_leader_with_their_own_digest():
    sim = settled()
    leader = max(sim.ids)
    sent = recording(sim)
    sim.run(3.0)
    gossip = [(src, dst, m) for _, src, dst, m in sent if isinstance(m, Gossip)]
    followers = [p for p in sim.ids if p != leader]
    assert {dst for src, dst, _ in gossip if src != leader} == {leader}
    assert all(len(m.members) == 1 for src, _, m in gossip if src != leader)
    for follower in followers:  # about one beat a heartbeat, each way
        up = sum(1 for src, dst, _ in gossip if (src, dst) == (follower, leader))
        down = sum(1 for src, dst, _ in gossip if (src, dst) == (leader, follower))
        assert 25 <= up <= 35 and 25 <= down <= 35, (follower, up, down)


def test_the_leaders_gossip_goes_with_its_heartbeats():
    sim = settled()
    leader = max(sim.ids)
    sent = recording(sim)
    sim.run(2.0)
    appends = {(at, dst) for at, src, dst, m in sent if src == leader and isinstance(m, Append)}
    beats = [(at, dst) for at, src, dst, m in sent if src == leader and isinstance(m, Gossip)]
    assert beats and all(beat in appends for beat in beats)


def test_nobody_looks_suspect_while_the_leader_relays():
    sim = settled()
    for _ in range(300):
        sim.step()
        assert statuses(sim, list(sim.ids)) == {Status.ALIVE}


def test_followers_gossip_with_each_other_once_the_leader_is_gone():
    sim = settled()
    leader = max(sim.ids)
    survivors = [p for p in sim.ids if p != leader]
    sent = recording(sim)
    sim.crash(leader)
    crashed_at = sim.now
    held_dead = set()
    for _ in range(100):  # one virtual second: through detection and the election
        sim.step()
        for a in survivors:
            view = sim.nodes[a].membership
            held_dead |= {(a, b) for b in survivors if view.status(b, sim.now) is Status.DEAD}
    assert not held_dead, held_dead
    direct = [(at, src, dst) for at, src, dst, m in sent if isinstance(m, Gossip) and dst != leader]
    first = min(at for at, src, dst in direct if src in survivors and dst in survivors)
    slack = RELAY_SLACK * sim.settings.heartbeat_interval
    assert first - crashed_at <= slack + sim.settings.heartbeat_interval
    assert sim.agreed_on_highest()


def test_steady_peers_tick_about_once_a_heartbeat():
    sim = settled()
    hb = sim.settings.heartbeat_interval
    ticks = dict.fromkeys(sim.ids, 0)
    for _ in range(200):  # two virtual seconds
        before = {p: sim.nodes[p].last_tick for p in sim.ids}
        sim.step()
        for p in sim.ids:
            ticks[p] += sim.nodes[p].last_tick != before[p]
    assert all(2.0 / hb * 0.8 <= n <= 2.0 / hb * 1.3 for n in ticks.values()), ticks


def test_only_news_wakes_an_idle_leader():
    sim = settled()
    leader = sim.nodes[max(sim.ids)]
    term, last = leader.term, leader.log.last_index
    idle_reply = AppendReply(term, 1, True, last)
    assert not leader.needs_cycle(idle_reply)
    assert not leader.needs_cycle(Gossip(1, (leader.membership.digest(1),)))  # type: ignore[arg-type]
    assert leader.needs_cycle(AppendReply(term, 1, False, 0))  # a refusal: resend
    assert leader.needs_cycle(AppendReply(term + 1, 1, False, 0))  # a newer term: step down
    assert leader.needs_cycle(Results(term, 1, ()))
    leader.propose(sim.now, [Noop()])
    assert not leader.needs_cycle(idle_reply)  # (its answer to the entry in flight counts)
    assert leader.needs_cycle(AppendReply(term, 1, True, last + 1))  # may commit the entry


def test_a_follower_takes_every_append_at_once():
    sim = settled()
    follower = sim.nodes[1]
    assert follower.needs_cycle(Append(follower.term, max(sim.ids), 0, 0, (), 0))
