"""Ring 1: the gossip membership table (`peer.protocol.membership.MembershipTable`), driven directly
with plain digests and `now`; no I/O, no clock, a seeded `random.Random`."""

from __future__ import annotations

import random

from peer.protocol.membership import (
    FULL_FANOUT_LIMIT,
    Gossip,
    MemberDigest,
    MembershipTable,
    MembershipTimings,
    Status,
)

TIMINGS = MembershipTimings(
    heartbeat_interval=0.1, suspect_after=0.3, failure_timeout=0.5, fanout=3
)
PEERS = (1, 2, 3, 4, 5)


def make_table(
    node_id: int = 1, peers: tuple[int, ...] = PEERS, incarnation: int = 1, seed: int = 0
) -> MembershipTable:
    return MembershipTable(node_id, peers, incarnation, TIMINGS, random.Random(seed))


def gossip(sender: int, *digests: MemberDigest) -> Gossip:
    return Gossip(sender, digests)


def heard(
    table: MembershipTable, now: float, peer: int, counter: int, incarnation: int = 1
) -> list[int]:
    """Feed the table a digest of `peer` as told by `peer` itself."""
    return table.merge(now, gossip(peer, MemberDigest(peer, incarnation, counter)))


def targets(sends: list[tuple[int, Gossip]]) -> list[int]:
    return [to for to, _ in sends]


# ------------------------------------------------------------------ failure detector


def test_peer_is_alive_then_suspect_then_dead_as_its_counter_stops_growing() -> None:
    table = make_table()
    heard(table, 0.0, 2, counter=1)
    assert table.status(2, 0.0) is Status.ALIVE
    assert table.status(2, 0.29) is Status.ALIVE
    assert table.status(2, 0.31) is Status.SUSPECT
    assert table.status(2, 0.49) is Status.SUSPECT
    assert table.status(2, 0.51) is Status.DEAD
    assert 2 not in table.live(0.51)


def test_suspect_peer_is_still_counted_live() -> None:
    table = make_table()
    heard(table, 0.0, 2, counter=1)
    assert table.status(2, 0.4) is Status.SUSPECT
    assert 2 in table.live(0.4)


def test_growing_counter_keeps_a_peer_alive() -> None:
    table = make_table()
    for step in range(20):
        heard(table, step * 0.1, 2, counter=step + 1)
    assert table.status(2, 1.95) is Status.ALIVE


def test_dead_peer_comes_back_alive_when_its_counter_grows() -> None:
    table = make_table()
    heard(table, 0.0, 2, counter=1)
    assert table.status(2, 1.0) is Status.DEAD
    heard(table, 1.0, 2, counter=2)
    assert table.status(2, 1.0) is Status.ALIVE


def test_never_heard_peer_is_dead() -> None:
    table = make_table()
    assert table.status(3, 0.0) is Status.DEAD
    assert table.last_seen(3, 0.0) is None
    assert table.digest(3) is None
    assert table.live(0.0) == frozenset({1})


def test_self_is_always_alive_and_live() -> None:
    table = make_table(node_id=4)
    assert table.status(4, 100.0) is Status.ALIVE
    assert 4 in table.live(100.0)


def test_relayed_digest_counts_as_news_of_that_peer() -> None:
    table = make_table()
    table.merge(0.0, gossip(2, MemberDigest(2, 1, 5), MemberDigest(3, 1, 7)))
    assert table.status(3, 0.1) is Status.ALIVE
    assert table.digest(3) == MemberDigest(3, 1, 7)


# ------------------------------------------------------------------ merge rules


def test_higher_incarnation_is_reported_as_restart() -> None:
    table = make_table()
    assert heard(table, 0.0, 2, counter=40, incarnation=1) == []
    assert heard(table, 0.1, 2, counter=1, incarnation=2) == [2]
    digest = table.digest(2)
    assert digest is not None
    assert digest.version() == (2, 1)


def test_first_news_of_a_peer_is_not_a_restart() -> None:
    table = make_table()
    assert heard(table, 0.0, 2, counter=1, incarnation=7) == []


def test_growing_counter_in_same_incarnation_is_not_a_restart() -> None:
    table = make_table()
    heard(table, 0.0, 2, counter=1)
    assert heard(table, 0.1, 2, counter=2) == []


def test_stale_digest_with_lower_version_is_ignored() -> None:
    table = make_table()
    heard(table, 0.0, 2, counter=5, incarnation=2)
    assert heard(table, 0.4, 2, counter=9, incarnation=1) == []
    assert heard(table, 0.4, 2, counter=3, incarnation=2) == []
    assert table.digest(2) == MemberDigest(2, 2, 5)
    assert table.status(2, 0.51) is Status.DEAD  # stale news did not refresh it


def test_repeated_digest_with_same_version_does_not_refresh_the_peer() -> None:
    table = make_table()
    heard(table, 0.0, 2, counter=5)
    heard(table, 0.4, 2, counter=5)
    assert table.last_seen(2, 0.45) == 0.45
    assert table.status(2, 0.51) is Status.DEAD


def test_gossip_about_self_is_ignored() -> None:
    table = make_table(node_id=1, incarnation=3)
    before = table.me
    restarted = table.merge(0.0, gossip(2, MemberDigest(1, 99, 99, role="leader")))
    assert restarted == []
    assert table.me == before
    assert table.digest(1) == before
    (_, sent), *_ = table.tick(0.0)
    assert [d for d in sent.members if d.id == 1] == [table.me]  # not relayed back


def test_gossip_about_unknown_peers_is_ignored() -> None:
    table = make_table()
    table.merge(0.0, gossip(2, MemberDigest(42, 1, 1)))
    assert table.digest(42) is None
    assert 42 not in table.live(0.0)


# ------------------------------------------------------------------ heartbeats and fanout


def test_heartbeat_counter_bumps_once_per_interval() -> None:
    table = make_table()
    step = 0.01
    bumps = []
    for i in range(201):  # 0.00 .. 2.00 in steps of 10 ms
        before = table.me.counter
        table.tick(i * step)
        assert table.me.counter - before in (0, 1)
        if table.me.counter > before:
            bumps.append(i * step)
    gaps = [b - a for a, b in zip(bumps, bumps[1:], strict=False)]
    assert bumps[0] == 0.0
    assert len(bumps) >= 2.0 / (TIMINGS.heartbeat_interval + step)
    assert all(
        TIMINGS.heartbeat_interval - 1e-9 <= g <= TIMINGS.heartbeat_interval + step + 1e-9
        for g in gaps
    )


def test_tick_sends_gossip_only_when_the_heartbeat_is_due() -> None:
    table = make_table()
    assert table.tick(0.0) != []
    assert table.tick(0.05) == []
    assert table.tick(0.1) != []


def test_sparse_ticks_bump_the_counter_once_each() -> None:
    table = make_table()
    table.tick(0.0)
    table.tick(1.0)
    assert table.me.counter == 2


def test_gossip_carries_own_bumped_digest_and_what_is_known_of_others() -> None:
    table = make_table()
    heard(table, 0.0, 3, counter=7)
    sends = table.tick(0.0)
    message = sends[0][1]
    assert message.sender == 1
    assert message.members[0] == MemberDigest(1, 1, 1)
    assert MemberDigest(3, 1, 7) in message.members


def test_small_cluster_gossips_to_every_other_peer() -> None:
    peers = tuple(range(1, FULL_FANOUT_LIMIT + 1))
    table = make_table(node_id=1, peers=peers)
    assert sorted(targets(table.tick(0.0))) == list(range(2, FULL_FANOUT_LIMIT + 1))


def test_fanout_sample_is_used_above_full_fanout_limit() -> None:
    peers = tuple(range(1, FULL_FANOUT_LIMIT + 5))
    table = make_table(node_id=1, peers=peers, seed=7)
    reached: set[int] = set()
    for step in range(30):
        sent = targets(table.tick(step * 0.15))
        assert len(sent) == TIMINGS.fanout
        assert len(set(sent)) == TIMINGS.fanout
        assert set(sent) <= set(peers) - {1}
        reached |= set(sent)
    assert len(reached) > TIMINGS.fanout  # the sample varies from round to round


def test_fanout_sample_comes_from_the_given_random() -> None:
    peers = tuple(range(1, FULL_FANOUT_LIMIT + 5))
    first = make_table(peers=peers, seed=11)
    second = make_table(peers=peers, seed=11)
    rounds = [(targets(first.tick(t * 0.15)), targets(second.tick(t * 0.15))) for t in range(10)]
    assert all(a for a, _ in rounds)
    assert all(a == b for a, b in rounds)


def test_an_early_beat_goes_to_the_chosen_peers_and_puts_the_timer_back():
    table = make_table()
    table.tick(0.0)
    sends = table.beat(0.05, [5], next_in=0.15)
    assert targets(sends) == [5]
    assert sends[0][1].members[0].counter == 2
    assert table.tick(0.15) == []  # the own timer now waits until 0.2
    assert targets(table.tick(0.2)) == [2, 3, 4, 5]


def test_a_beat_may_carry_only_this_peers_digest():
    table = make_table()
    heard(table, 0.0, 2, counter=1)
    heard(table, 0.0, 3, counter=1)
    whole = table.beat(0.1, [5], next_in=0.1)[0][1]
    own = table.beat(0.2, [5], next_in=0.1, whole=False)[0][1]
    assert [d.id for d in whole.members] == [1, 2, 3]
    assert [d.id for d in own.members] == [1]


def test_defer_holds_the_own_timer_back_but_never_brings_it_forward():
    table = make_table()
    table.tick(0.0)  # next beat due at 0.1
    table.defer(0.25)
    assert table.tick(0.2) == [] and table.next_beat == 0.25
    table.defer(0.1)
    assert table.next_beat == 0.25
    assert table.since_beat(0.2) == 0.2
