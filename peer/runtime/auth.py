"""Signing of peer-to-peer traffic: HMAC-SHA256 over sender, receiver, channel,
timestamp, sequence number and body, and the refusal of replays.

`sign` builds a request's headers and `verify` checks them; `seal` and `unseal` do the
same for one frame of a peer stream. Each says why it refuses. A message is bound to
its receiver and its channel (`stream` frames, the stream's `open`ing request,
forwarded `writes`, posted `messages`), so a capture cannot be redirected, and carries
its sender's sequence number: each sender counts up from its incarnation shifted left
by 32 bits (`Signer`; the incarnation is stored and grows with every start), so a
restarted sender continues above what it sent before even if the clock stepped back.
A receiver's `ReplayGuard` admits each (sender, channel, number) once, within a window
of the highest seen, and nothing signed before the receiver started (its memory of
what it admitted does not survive a restart): a frame replayed within its freshness
window is refused as a replay, an older one as stale. The clock reading is passed in, so the
functions are pure.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

MAX_SKEW = 10.0  # seconds a signed request stays valid
WINDOW = 4096  # sequence numbers below a sender's highest that may still arrive late
SENDER = "X-Peer-Id"
TIMESTAMP = "X-Peer-Time"
SEQUENCE = "X-Peer-Seq"
SIGNATURE = "X-Peer-Signature"
CHANNELS = ("stream", "open", "writes", "messages")
HEX = frozenset("0123456789abcdef")


def _mac(
    secret: bytes, sender: str, to: int, channel: str, timestamp: str, seq: str, body: bytes
) -> str:
    head = f"{sender}\n{to}\n{channel}\n{timestamp}\n{seq}\n".encode()
    return hmac.digest(secret, head + body, "sha256").hex()


def sign(
    secret: bytes, sender: int, to: int, channel: str, seq: int, now: float, body: bytes
) -> dict[str, str]:
    timestamp = f"{now:.3f}"
    return {
        SENDER: str(sender),
        TIMESTAMP: timestamp,
        SEQUENCE: str(seq),
        SIGNATURE: _mac(secret, str(sender), to, channel, timestamp, str(seq), body),
    }


def seal(secret: bytes, sender: int, to: int, seq: int, now: float, body: bytes) -> bytes:
    """One signed stream frame: `sender\\ntimestamp\\nseq\\nmac\\n` then the body."""
    timestamp = f"{now:.3f}"
    mac = _mac(secret, str(sender), to, "stream", timestamp, str(seq), body)
    return f"{sender}\n{timestamp}\n{seq}\n{mac}\n".encode() + body


class Signer:
    """One sender's signatures, each with the next number of its channel's sequence."""

    def __init__(self, secret: bytes, sender: int, start: int) -> None:
        self.secret = secret
        self.sender = sender
        self._next = dict.fromkeys(CHANNELS, start)

    def _take(self, channel: str) -> int:
        seq = self._next[channel]
        self._next[channel] = seq + 1
        return seq

    def headers(self, to: int, channel: str, now: float, body: bytes) -> dict[str, str]:
        return sign(self.secret, self.sender, to, channel, self._take(channel), now, body)

    def frame(self, to: int, now: float, body: bytes) -> bytes:
        return seal(self.secret, self.sender, to, self._take("stream"), now, body)


class ReplayGuard:
    """What one receiver has admitted: per (sender, channel), the highest number and the
    numbers admitted within `window` below it."""

    def __init__(self, window: int = WINDOW, since: float = 0.0) -> None:
        self.window = window
        self.since = since  # the receiver's start: what was signed before may be a replay
        self._top: dict[tuple[str, str], int] = {}
        self._seen: dict[tuple[str, str], set[int]] = {}

    def admit(self, sender: str, channel: str, seq: int) -> str | None:
        """None (and remember it) the first time; the reason it is refused otherwise."""
        key = (sender, channel)
        top = self._top.get(key)
        seen = self._seen.setdefault(key, set())
        if top is not None and seq <= top - self.window:
            return "stale sequence number"
        if seq in seen:
            return "replayed message"
        seen.add(seq)
        if top is None or seq > top:
            self._top[key] = top = seq
        if len(seen) > 2 * self.window:
            self._seen[key] = {s for s in seen if s > top - self.window}
        return None


def _check(
    secret: bytes,
    fields: tuple[str, str, str, str],
    to: int,
    channel: str,
    body: bytes,
    now: float,
    guard: ReplayGuard,
) -> str | None:
    sender, timestamp, seq, signature = fields
    if not (sender.isascii() and sender.isdigit()) or len(sender) > 10:
        return "malformed sender"
    if len(signature) != 64 or not signature.isascii() or set(signature) - HEX:
        return "malformed signature"
    try:
        sent_at = float(timestamp)
    except ValueError:
        return "malformed timestamp"
    if not (seq.isascii() and seq.isdigit()) or len(seq) > 24:
        return "malformed sequence number"
    if not abs(now - sent_at) <= MAX_SKEW:
        return "stale or future timestamp"
    if sent_at < guard.since:
        return "signed before this peer started"
    if not hmac.compare_digest(signature, _mac(secret, sender, to, channel, timestamp, seq, body)):
        return "bad signature"
    return guard.admit(sender, channel, int(seq))  # only an authentic message counts


def verify(
    secret: bytes,
    to: int,
    channel: str,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    guard: ReplayGuard,
) -> str | None:
    """None when the request is authentic, fresh, for `to` and not seen before; else the
    reason it is refused."""
    fields = tuple(headers.get(h) for h in (SENDER, TIMESTAMP, SEQUENCE, SIGNATURE))
    if not all(fields):
        return "unsigned request"
    return _check(secret, fields, to, channel, body, now, guard)  # type: ignore[arg-type]


def unseal(
    secret: bytes, to: int, frame: bytes, now: float, guard: ReplayGuard
) -> tuple[int, bytes] | str:
    """(sender, body) of an authentic, fresh, first-seen frame for `to`, else the reason
    it is refused."""
    parts = frame.split(b"\n", 4)
    if len(parts) != 5 or not parts[0].isdigit():
        return "malformed frame"
    sender, timestamp, seq, mac = (p.decode(errors="replace") for p in parts[:4])
    reason = _check(secret, (sender, timestamp, seq, mac), to, "stream", parts[4], now, guard)
    return reason if reason is not None else (int(sender), parts[4])
