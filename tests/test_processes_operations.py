"""Ring 3: the operator's writes through the command line, against real peers.

`peer cancel`, `peer retry` (a cancelled task, retried, ends `succeeded`), `peer requeue`
(every failed task a filter matches, in one entry), `peer drain` / `undrain` (a drained
peer gets no new tasks, and `peer members` shows it), with `-o json` and human output.
"""

from __future__ import annotations

import json

from tests.chaos import START_TIMEOUT, list_all, request_once
from tests.conftest import ClusterFactory
from tests.harness import Cluster
from tests.test_client_cli import _cli, _json_of

WAIT = 20.0


def _states(cluster: Cluster, peer: int, ids: list[int]) -> list[str]:
    return [json.loads(request_once(cluster, peer, "GET", f"/tasks/{i}")[1])["state"] for i in ids]


def _submit(cluster: Cluster, specs: list[dict[str, object]]) -> list[int]:
    body = json.dumps({"tasks": specs}).encode()
    status, data = request_once(cluster, 3, "POST", "/tasks/batch", body)
    assert status == 201, data
    return [t["id"] for t in json.loads(data)["tasks"]]


def test_cancel_retry_requeue_drain_and_members_from_the_command_line(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3, retry_base=0.05, retry_max=0.1)
    cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    peer = ["--peer", cluster.url(1)]
    [parked] = _submit(cluster, [{"kind": "echo", "args": "back", "delay": 3600}])
    failing = _submit(cluster, [{"kind": "fail", "max_attempts": 1}] * 5)

    [cancelled] = _cli(["cancel", str(parked), *peer, "-o", "json"])
    assert _json_of(cancelled)["state"] == "cancelled"
    [retried] = _cli(["retry", str(parked), *peer, "-o", "json"])
    assert _json_of(retried)["state"] in ("queued", "running", "succeeded")
    cluster.wait_for(lambda: _states(cluster, 1, [parked]) == ["succeeded"], WAIT, "the retry")
    [again] = _cli(["retry", str(parked), *peer])  # succeeded: nothing to retry
    assert again[0] == 1 and "409" in again[2], again

    cluster.wait_for(
        lambda: _states(cluster, 1, failing) == ["failed"] * 5, WAIT, "the fail tasks to fail"
    )
    requeued, human = _cli(
        ["requeue", "--state", "failed", "--kind", "fail", *peer, "-o", "json"],
        ["requeue", "--state", "failed", "--kind", "echo", *peer],
    )
    assert sorted(_json_of(requeued)["ids"]) == failing and _json_of(requeued)["requeued"] == 5
    assert human[0] == 0 and "requeued 0 task(s)" in human[1], human

    def failed_twice() -> bool:
        tasks = {t["id"]: t for t in list_all(cluster, 1)}
        return all(tasks[i]["state"] == "failed" and tasks[i]["attempt"] == 2 for i in failing)

    cluster.wait_for(failed_twice, WAIT, "the requeued tasks to fail once more")

    [drained] = _cli(["drain", "2", *peer, "-o", "json"])
    assert _json_of(drained) == {"peer": 2, "drained": True}
    cluster.wait_for(
        lambda: any(
            m["drained"] for m in (cluster.view(1) or {}).get("members", []) if m["id"] == 2
        ),
        WAIT,
        "peer 1 to see peer 2 drained",
    )
    [members, table] = _cli(["members", *peer, "-o", "json"], ["members", *peer])
    assert {m["id"]: m["drained"] for m in _json_of(members)["members"]} == {
        1: False,
        2: True,
        3: False,
    }
    assert "(drained)" in table[1], table
    echoes = _submit(cluster, [{"kind": "echo", "args": i} for i in range(30)])
    cluster.wait_for(
        lambda: _states(cluster, 3, echoes) == ["succeeded"] * 30, WAIT, "the echo tasks"
    )
    workers = {t["worker"] for t in list_all(cluster, 3) if t["id"] in echoes}
    assert workers and 2 not in workers, workers
    [undrained] = _cli(["undrain", "2", *peer, "-o", "json"])
    assert _json_of(undrained) == {"peer": 2, "drained": False}
