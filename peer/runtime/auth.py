"""Signing of peer-to-peer traffic: HMAC-SHA256 over sender, timestamp and body.

`sign` builds a request's headers and `verify` checks them; `seal` and `unseal` do the
same for one frame of a peer stream. Each says why it refuses.
The clock reading is passed in, so both are pure functions of their arguments.
"""

from __future__ import annotations

import hmac

MAX_SKEW = 10.0  # seconds a signed request stays valid
SENDER = "X-Peer-Id"
TIMESTAMP = "X-Peer-Time"
SIGNATURE = "X-Peer-Signature"


def _mac(secret: bytes, sender: str, timestamp: str, body: bytes) -> str:
    msg = sender.encode() + b"\n" + timestamp.encode() + b"\n" + body
    return hmac.digest(secret, msg, "sha256").hex()


def sign(secret: bytes, sender: int, now: float, body: bytes) -> dict[str, str]:
    timestamp = f"{now:.3f}"
    return {
        SENDER: str(sender),
        TIMESTAMP: timestamp,
        SIGNATURE: _mac(secret, str(sender), timestamp, body),
    }


def verify(secret: bytes, headers: dict[str, str], body: bytes, now: float) -> str | None:
    """None when the request is authentic and fresh, else the reason it is refused."""
    sender, timestamp, signature = (headers.get(h) for h in (SENDER, TIMESTAMP, SIGNATURE))
    if not sender or not timestamp or not signature:
        return "unsigned request"
    return _check(secret, sender, timestamp, signature, body, now)


def _check(
    secret: bytes, sender: str, timestamp: str, signature: str, body: bytes, now: float
) -> str | None:
    try:
        sent_at = float(timestamp)
    except ValueError:
        return "malformed timestamp"
    if not abs(now - sent_at) <= MAX_SKEW:
        return "stale or future timestamp"
    if not hmac.compare_digest(signature, _mac(secret, sender, timestamp, body)):
        return "bad signature"
    return None


def seal(secret: bytes, sender: int, now: float, body: bytes) -> bytes:
    """One signed frame for a peer stream: `sender\\ntimestamp\\nmac\\n` then the body."""
    timestamp = f"{now:.3f}"
    mac = _mac(secret, str(sender), timestamp, body)
    return f"{sender}\n{timestamp}\n{mac}\n".encode() + body


def unseal(secret: bytes, frame: bytes, now: float) -> tuple[int, bytes] | str:
    """(sender, body) of an authentic, fresh frame, else the reason it is refused."""
    parts = frame.split(b"\n", 3)
    if len(parts) != 4 or not parts[0].isdigit():
        return "malformed frame"
    sender, timestamp, mac = (p.decode(errors="replace") for p in parts[:3])
    reason = _check(secret, sender, timestamp, mac, parts[3], now)
    return reason if reason is not None else (int(sender), parts[3])
