"""Ring 3: a follower answers a forwarded write from the leader's reply (so it may stay
a spare) and still reads back what was written through it: each read waits until the
follower has applied the write, asking the leader for the log at once.

- A submit, then a cancel, through a follower: the same follower's next read (by id and
  in the listing) shows each, every time, with no pause between write and read.
- A follower the write did not pass through reads it by id at once too: before it says
  "not found" of an id past its newest, it catches up to the leader.
- The status, health and metrics routes answer too (they never wait).
"""

from __future__ import annotations

import json

from tests.chaos import START_TIMEOUT
from tests.conftest import ClusterFactory
from tests.harness import Cluster

JSON = {"Content-Type": "application/json"}


def _call(
    cluster: Cluster, n: int, method: str, path: str, body: object = None
) -> tuple[int, object]:
    raw = None if body is None else json.dumps(body).encode()
    answer = cluster.request(n, method, path, raw, JSON if raw is not None else None)
    assert answer is not None, (n, method, path)
    return answer[0], json.loads(answer[1]) if answer[1] else None


def test_a_follower_reads_back_every_write_made_through_it(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(5)
    leader = cluster.wait_for_leader(expected=5, timeout=START_TIMEOUT)
    assert leader is not None
    followers = [n for n in cluster.ids if n != leader]
    for i in range(40):
        peer = followers[i % len(followers)]
        status, task = _call(
            cluster, peer, "POST", "/tasks", {"kind": "echo", "args": i, "delay": 3600}
        )
        assert status == 201, task
        assert isinstance(task, dict)
        status, read = _call(cluster, peer, "GET", f"/tasks/{task['id']}")
        assert status == 200 and isinstance(read, dict) and read["args"] == i, read
        other = followers[(i + 1) % len(followers)]  # (not asked: confirms with the leader)
        status, read = _call(cluster, other, "GET", f"/tasks/{task['id']}")
        assert status == 200 and isinstance(read, dict) and read["args"] == i, (other, read)
        if i % 4 == 0:
            status, cancelled = _call(cluster, peer, "POST", f"/tasks/{task['id']}/cancel", {})
            assert status == 200, cancelled
            status, listed = _call(cluster, peer, "GET", "/tasks?state=cancelled")
            assert status == 200 and isinstance(listed, dict), listed
            assert task["id"] in [t["id"] for t in listed["tasks"]], listed
    status, missing = _call(cluster, followers[0], "GET", "/tasks/999999")
    assert status == 404, missing
    for peer in followers:
        for path in ("/cluster", "/health", "/metrics"):
            answer = cluster.request(peer, "GET", path)
            assert answer is not None and answer[0] == 200, (peer, path)
