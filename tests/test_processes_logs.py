"""Ring 3: a peer's log is JSON lines when it is not a terminal (the harness writes each
peer's output to a file), and every line carries the peer's id and the current term;
the election's typed events appear under their names."""

from __future__ import annotations

import json

from tests.chaos import START_TIMEOUT, request_once
from tests.conftest import ClusterFactory

FIELDS = {"ts", "level", "node", "event", "term", "task", "logger", "msg"}


def test_every_log_line_is_json_with_node_and_term_through_an_election_and_a_task(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3)
    leader = cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    cluster.kill(leader)
    new = cluster.wait_for_leader(ids=[1, 2], timeout=START_TIMEOUT)
    body = json.dumps({"kind": "echo", "args": "logged"}).encode()
    status, data = request_once(cluster, new, "POST", "/tasks", body)
    assert status == 201, data
    task = json.loads(data)["id"]
    status, data = request_once(cluster, new, "GET", f"/tasks/{task}?wait=10")
    assert json.loads(data)["state"] == "succeeded", data
    cluster.stop_all()  # the logs are complete once the peers have stopped
    names: dict[int, set[str]] = {}
    for peer in (1, 2):
        text = cluster.log_path(peer).read_text(encoding="utf-8")
        lines = [line for line in text.splitlines() if line and not line.startswith("===")]
        assert lines, f"peer {peer} logged nothing"
        for line in lines:
            record = json.loads(line)  # every line parses
            assert set(record) >= FIELDS, record
            assert record["node"] == peer and isinstance(record["term"], int), record
        names[peer] = {json.loads(line)["event"] for line in lines}
    assert {"became_leader", "election_started"} <= names[new], names
    assert "following" in names[3 - new] or "leader_lost" in names[3 - new], names
