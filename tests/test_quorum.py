"""Ring 1: vote counting (`election.quorum.Quorum`), driven directly."""

from __future__ import annotations

import pytest

from election.quorum import Quorum


def make_quorum(n: int) -> Quorum:
    return Quorum(range(1, n + 1))


def grant_all(quorum: Quorum, peers: list[int]) -> None:
    for peer in peers:
        quorum.grant(peer)


@pytest.mark.parametrize(("peers", "majority"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4)])
def test_majority_is_more_than_half_of_the_peers(peers: int, majority: int) -> None:
    assert make_quorum(peers).size == majority


@pytest.mark.parametrize("peers", [1, 2, 3, 4, 5, 6])
def test_claim_is_won_exactly_at_the_majority(peers: int) -> None:
    quorum = make_quorum(peers)
    quorum.reset(1)
    voters = list(range(1, peers + 1))
    grant_all(quorum, voters[: quorum.size - 1])
    assert not quorum.won()
    quorum.grant(voters[quorum.size - 1])
    assert quorum.won()


def test_grants_from_outsiders_are_ignored() -> None:
    quorum = make_quorum(3)
    quorum.reset(1)
    quorum.grant(1)
    grant_all(quorum, [4, 99, 0, -1])
    assert quorum.granted == {1}
    assert not quorum.won()


def test_repeated_grant_from_one_peer_counts_once() -> None:
    quorum = make_quorum(5)
    quorum.reset(1)
    grant_all(quorum, [2, 2, 2, 2])
    assert quorum.granted == {2}
    assert not quorum.won()


def test_reset_starts_a_new_round_with_no_grants() -> None:
    quorum = make_quorum(3)
    quorum.reset(1)
    grant_all(quorum, [1, 2])
    assert quorum.won()
    quorum.reset(2)
    assert quorum.round == 2
    assert quorum.granted == set()
    assert not quorum.won()


def test_duplicate_peer_ids_do_not_inflate_the_majority() -> None:
    quorum = Quorum([1, 2, 3, 3, 2])
    assert quorum.size == 2
