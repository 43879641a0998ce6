"""The peer codec (peer/wire.py): every message kind round-trips, and anything that is
not exactly a well-formed batch is refused with `WireError` naming the field."""

from __future__ import annotations

import re

import orjson
import pytest

from election.messages import (
    Alive,
    Coordinator,
    CoordinatorAck,
    Election,
    Heartbeat,
    HeartbeatAck,
    LogPosition,
    Probe,
    ProbeReply,
)
from peer.protocol.log import Entry
from peer.protocol.membership import Gossip, MemberDigest
from peer.protocol.messages import Append, AppendReply, FetchLog, LogChunk, ResultItem, Results
from peer.runtime.wire import (
    LIMIT,
    MAX_ITEMS,
    WireError,
    decode_batch,
    encode_batch,
    encode_message,
    join_encoded,
)

EVERY_KIND = [
    Election(3, 1),
    Alive(3, 2),
    Probe(4, 1, LogPosition(3, 10)),
    ProbeReply(3, 2, 4, False, 5),
    ProbeReply(3, 2, 4, True),
    Coordinator(4, 5, LogPosition(3, 10)),
    CoordinatorAck(4, 1, True, LogPosition(3, 9)),
    Heartbeat(4, 5),
    HeartbeatAck(4, 1, True),
    Append(4, 5, 9, 3, (Entry(4, 10, '{"op":"noop"}'), Entry(4, 11, "x")), 9),
    AppendReply(4, 1, True, 11),
    FetchLog(4, 5, 7),
    LogChunk(4, 1, 7, (Entry(3, 7, "c"),), 7),
    Gossip(5, (MemberDigest(5, 2, 100, "leader", 4, 5, 11, 9), MemberDigest(1, 1, 7))),
    Results(4, 2, (ResultItem(8, 1, True, "[1]"), ResultItem(9, 2, False, "boom"))),
]


def fields_of(kind: str, **fields: object) -> bytes:
    return orjson.dumps([[kind, fields]])


def heartbeat(**overrides: object) -> bytes:
    fields = {"term": 4, "sender": 5, "prev_index": 0, "prev_term": 0, "entries": []}
    return fields_of("Append", **{**fields, "commit": 0, **overrides})


def test_every_kind_round_trips():
    assert decode_batch(encode_batch(EVERY_KIND)) == EVERY_KIND


def test_messages_encoded_one_by_one_join_into_the_same_batch():
    parts = [encode_message(m) for m in EVERY_KIND]
    assert join_encoded(parts) == encode_batch(EVERY_KIND)
    assert join_encoded([]) == encode_batch([])


def test_an_optional_field_may_be_left_out_and_takes_its_default():
    reply = decode_batch(fields_of("ProbeReply", term=1, sender=2, probe_term=2, granted=True))
    ack = decode_batch(fields_of("CoordinatorAck", term=1, sender=2, granted=False))
    assert reply == [ProbeReply(1, 2, 2, True, None)]
    assert ack == [CoordinatorAck(1, 2, False, LogPosition())]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b'{"a": 1}', "must be a list"),
        (b'[["Heartbeat"]]', "must be [kind, fields]"),
        (b'[[1, {"term": 1, "sender": 1}]]', "must be [kind, fields]"),
        (b'[["Nonsense", {}]]', "unknown message kind"),
        (b'[["Heartbeat", [1, 2]]]', "Heartbeat: fields must be an object"),
        (fields_of("Heartbeat", term=1), "Heartbeat.sender: missing"),
        (fields_of("Heartbeat", term=1, sender=2, extra=3), "unknown field extra"),
        (fields_of("Heartbeat", term=-1, sender=2), "Heartbeat.term: must be a non-negative"),
        (fields_of("Heartbeat", term=LIMIT, sender=2), "Heartbeat.term: must be a non-negative"),
        (fields_of("Heartbeat", term=1.0, sender=2), "Heartbeat.term: must be a non-negative"),
        (fields_of("Heartbeat", term=True, sender=2), "Heartbeat.term: must be a non-negative"),
        (fields_of("Heartbeat", term="1", sender=2), "Heartbeat.term: must be a non-negative"),
        (fields_of("Heartbeat", term=None, sender=2), "Heartbeat.term: must be a non-negative"),
        (fields_of("HeartbeatAck", term=1, sender=2, ok=1), "HeartbeatAck.ok: must be a boolean"),
        (heartbeat(entries={}), "Append.entries: must be a list"),
        (heartbeat(entries=[[1, 2, "x"]]), "Entry: fields must be an object"),
        (heartbeat(entries=[{"term": 1, "index": 2}]), "Entry.command: missing"),
        (heartbeat(entries=[{"term": 1, "index": 2, "command": 3}]), "Entry.command: must be a"),
        (
            heartbeat(entries=[{"term": 1, "index": 1, "command": "c"}] * (MAX_ITEMS + 1)),
            "Append.entries: must be a list",
        ),
        (
            fields_of("Probe", term=1, sender=2, log={"term": 1, "index": -3}),
            "LogPosition.index: must be a non-negative",
        ),
        (
            fields_of("ProbeReply", term=1, sender=2, probe_term=2, granted=False, higher="x"),
            "ProbeReply.higher: must be a non-negative",
        ),
        (
            fields_of("Gossip", sender=1, members=[{"id": 1, "incarnation": 1, "counter": "x"}]),
            "MemberDigest.counter: must be a non-negative",
        ),
    ],
)
def test_a_malformed_batch_is_refused_naming_the_field(body: bytes, reason: str):
    with pytest.raises(WireError, match=re.escape(reason)):
        decode_batch(body)


def test_one_bad_message_refuses_the_whole_batch():
    good = orjson.loads(encode_batch([Heartbeat(1, 2)]))
    bad = orjson.loads(fields_of("Heartbeat", term=1))
    with pytest.raises(WireError):
        decode_batch(orjson.dumps(good + bad))
