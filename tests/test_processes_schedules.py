"""Ring 3: a schedule fires exactly once per tick while its leader is SIGKILLed.

Real peer processes on loopback, read only through the public API: an every-0.5 s
schedule with `catch_up = "all"` runs while the leader is killed twice (and comes back,
and takes the lead back). Then the schedule is paused and, on every peer, the fired due
times are exactly the ticks from its origin on: no gap, no duplicate.
"""

from __future__ import annotations

import json
import statistics

from tests.chaos import FAILOVER_TIMEOUT, START_TIMEOUT, Json, list_all, request_once
from tests.conftest import ClusterFactory
from tests.harness import Cluster

EVERY = 0.5
SCHEDULE = {
    "name": "tick",
    "every": EVERY,
    "task": {"kind": "echo", "args": {"tick": True}},
    "catch_up": "all",
}


def _schedule(cluster: Cluster, peer: int) -> Json:
    status, data = request_once(cluster, peer, "GET", "/schedules/tick")
    assert status == 200, data
    result: Json = json.loads(data)
    return result


def _fired(cluster: Cluster, peer: int) -> int:
    try:
        return int(_schedule(cluster, peer)["fired"])
    except (OSError, AssertionError):
        return -1  # not answering (just killed or starting): not yet


def _wait_ticks(cluster: Cluster, leader: int, more: int) -> None:
    start = _fired(cluster, leader)
    cluster.wait_for(
        lambda: _fired(cluster, leader) >= start + more,
        more * EVERY + FAILOVER_TIMEOUT,
        f"{more} more ticks",
    )


def _kill_and_recover(cluster: Cluster, leader: int) -> None:
    cluster.kill(leader)
    survivors = [n for n in cluster.ids if n != leader]
    cluster.wait_for_leader(ids=survivors, timeout=FAILOVER_TIMEOUT)
    cluster.restart(leader)
    cluster.wait_for_leader(expected=leader, timeout=START_TIMEOUT)


def test_a_schedule_fires_each_tick_once_across_leader_kills(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    status, data = request_once(cluster, 1, "POST", "/schedules", json.dumps(SCHEDULE).encode())
    assert status == 201, data  # through a follower: forwarded, committed, read back
    _wait_ticks(cluster, leader, 4)
    for _ in range(2):
        _kill_and_recover(cluster, leader)
        _wait_ticks(cluster, leader, 4)
    status, data = request_once(cluster, leader, "POST", "/schedules/tick/pause", b"")
    assert status == 200 and json.loads(data)["paused"], data
    final = _schedule(cluster, leader)

    def settled() -> bool:
        return all(_fired(cluster, n) == final["fired"] for n in cluster.ids)

    cluster.wait_for(settled, FAILOVER_TIMEOUT, "every peer to apply the last tick")
    expected = [final["created_at"] + k * EVERY for k in range(1, final["fired"] + 1)]
    for peer in cluster.ids:
        tasks = [t for t in list_all(cluster, peer) if t["schedule"] == "tick"]
        dues = sorted(t["due"] for t in tasks)
        assert len(dues) == len(set(dues)), f"peer {peer}: a tick fired twice"
        assert [round(d, 6) for d in dues] == [round(d, 6) for d in expected], f"peer {peer}"
        assert len({t["key"] for t in tasks}) == len(tasks)
    lateness = sorted(t["lateness"] for t in tasks)
    assert statistics.median(lateness) < EVERY, lateness  # on time outside failovers
    assert final["skipped"] == {}


BAD_SCHEDULES = [
    ({**SCHEDULE, "every": None, "cron": "61 * * * *"}, "cron"),
    ({**SCHEDULE, "every": None, "cron": "* * *"}, "cron"),
    ({**SCHEDULE, "every": 0.1}, "every"),
    ({**SCHEDULE, "cron": "* * * * *"}, "every"),  # both
    ({**SCHEDULE, "task": {"kind": "no-such-kind"}}, "task.kind"),
    ({**SCHEDULE, "task": {"kind": "echo", "priority": "high"}}, "task.priority"),
    ({**SCHEDULE, "timezone": "Mars/Olympus"}, "timezone"),
    ({**SCHEDULE, "catch_up": "some"}, "catch_up"),
    ({**SCHEDULE, "name": "a b"}, "name"),
    ({**SCHEDULE, "colour": "red"}, "colour"),
]


def test_schedule_writes_answer_as_documented_and_bad_ones_change_nothing(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3)
    cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    paused = {**SCHEDULE, "name": "slow", "every": 3600.0}

    def post(body: Json, query: str = "") -> tuple[int, Json]:
        path = "/schedules" + query
        status, data = request_once(cluster, 1, "POST", path, json.dumps(body).encode())
        return status, json.loads(data)

    assert post(paused)[0] == 201
    assert post(paused)[0] == 200  # identical: unchanged
    status, answer = post({**paused, "every": 7200.0})
    assert status == 409 and answer["error"]["code"] == "conflict", answer
    status, answer = post({**paused, "every": 7200.0}, "?replace=1")
    assert status == 200 and answer["every"] == 7200.0, answer

    def listed() -> list[Json]:
        return [json.loads(request_once(cluster, n, "GET", "/schedules")[1]) for n in cluster.ids]

    cluster.wait_for(lambda: all(v == listed()[0] for v in listed()), 5.0, "peers to agree")
    before = listed()
    for body, field in BAD_SCHEDULES:
        status, answer = post(body)
        assert status == 400 and answer["error"]["field"] == field, (body, answer)
    for name, method, path in [("pause", "POST", "/pause"), ("delete", "DELETE", "")]:
        status, _ = request_once(cluster, 2, method, f"/schedules/nope{path}", b"")
        assert status == 404, name
    assert listed() == before
    status, data = request_once(cluster, 2, "DELETE", "/schedules/slow")
    assert status == 200, data
    cluster.wait_for(
        lambda: all(
            request_once(cluster, n, "GET", "/schedules/slow")[0] == 404 for n in cluster.ids
        ),
        FAILOVER_TIMEOUT,
        "the delete on every peer",
    )
