"""Ring 1: the signatures of peer messages bind receiver, channel and sequence number,
and a receiver's `ReplayGuard` admits each message once."""

from __future__ import annotations

from peer.runtime.auth import SEQUENCE, ReplayGuard, Signer, unseal, verify

SECRET = b"s" * 32
NOW = 1_000_000.0


def test_a_frame_is_admitted_once_and_only_by_its_receiver() -> None:
    signer, guard = Signer(SECRET, 1, 500), ReplayGuard()
    frame = signer.frame(2, NOW, b"body")
    assert unseal(SECRET, 3, frame, NOW, ReplayGuard()) == "bad signature"  # redirected
    assert unseal(SECRET, 2, frame, NOW, guard) == (1, b"body")
    assert unseal(SECRET, 2, frame, NOW + 1, guard) == "replayed message"
    assert unseal(SECRET, 2, signer.frame(2, NOW, b"body"), NOW, guard) == (1, b"body")


def test_a_tampered_sequence_number_breaks_the_signature() -> None:
    frame = Signer(SECRET, 1, 500).frame(2, NOW, b"x")
    forged = frame.replace(b"\n500\n", b"\n501\n", 1)
    assert unseal(SECRET, 2, forged, NOW, ReplayGuard()) == "bad signature"


def test_a_request_is_bound_to_its_channel_and_admitted_once() -> None:
    signer, guard = Signer(SECRET, 4, 10), ReplayGuard()
    headers = signer.headers(1, "writes", NOW, b"[]")
    assert verify(SECRET, 1, "messages", headers, b"[]", NOW, guard) == "bad signature"
    assert verify(SECRET, 1, "writes", headers, b"[]", NOW, guard) is None
    assert verify(SECRET, 1, "writes", headers, b"[]", NOW, guard) == "replayed message"
    bad = {**headers, SEQUENCE: "-3"}
    assert verify(SECRET, 1, "writes", bad, b"[]", NOW, guard) == "malformed sequence number"


def test_late_numbers_within_the_window_pass_older_ones_do_not() -> None:
    guard = ReplayGuard(window=8)
    assert guard.admit("1", "stream", 100) is None
    assert guard.admit("1", "stream", 95) is None  # arrived late, still inside the window
    assert guard.admit("1", "stream", 95) == "replayed message"
    assert guard.admit("1", "stream", 92) == "stale sequence number"
    assert guard.admit("1", "writes", 92) is None  # channels count apart
    assert guard.admit("2", "stream", 1) is None  # and senders


def test_the_guard_keeps_a_bounded_memory() -> None:
    guard = ReplayGuard(window=16)
    for seq in range(10_000):
        assert guard.admit("1", "stream", seq) is None
    assert len(guard._seen[("1", "stream")]) <= 32
    assert guard.admit("1", "stream", 9_990) == "replayed message"


def test_a_restarted_receiver_refuses_what_was_signed_before_it_started() -> None:
    frame = Signer(SECRET, 1, 500).frame(2, NOW - 1.0, b"")  # captured before the restart
    assert (
        unseal(SECRET, 2, frame, NOW, ReplayGuard(since=NOW)) == "signed before this peer started"
    )
    fresh = Signer(SECRET, 1, 501).frame(2, NOW + 0.1, b"")
    assert unseal(SECRET, 2, fresh, NOW + 0.2, ReplayGuard(since=NOW)) == (1, b"")


def test_malformed_senders_and_signatures_are_refused_before_any_mac() -> None:
    headers = Signer(SECRET, 4, 10).headers(1, "writes", NOW, b"")
    for field, value in (("X-Peer-Id", "\xff"), ("X-Peer-Id", "²"), ("X-Peer-Signature", "é" * 64)):
        reason = verify(SECRET, 1, "writes", {**headers, field: value}, b"", NOW, ReplayGuard())
        assert reason is not None and reason.startswith("malformed"), (field, reason)


def test_a_restarted_sender_counts_on_from_above() -> None:
    guard = ReplayGuard()
    before = Signer(SECRET, 1, 1_000)
    for _ in range(3):
        assert unseal(SECRET, 2, before.frame(2, NOW, b""), NOW, guard) == (1, b"")
    after = Signer(SECRET, 1, 2_000_000)  # a later incarnation: its numbers start higher
    assert unseal(SECRET, 2, after.frame(2, NOW, b""), NOW, guard) == (1, b"")
    incarnation = 1_796_000_000_000  # a wall clock in ms, shifted as transports do
    late = Signer(SECRET, 1, incarnation << 32)
    assert unseal(SECRET, 2, late.frame(2, NOW, b""), NOW, guard) == (1, b"")
