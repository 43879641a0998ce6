"""Ring 3: `GET /metrics` on every peer, parsed with prometheus-client's own parser.

Real peers on loopback: after 1,000 tasks (some failing, one worker SIGKILLed
while running sleeps) the task totals agree across all peers and with `/cluster`, the
names follow Prometheus' rules, and the shell's own histograms (HTTP, disk) are there.
"""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families

from tests.chaos import START_TIMEOUT, Json, request_once
from tests.conftest import ClusterFactory
from tests.harness import Cluster

ECHOES, FAILS, SLEEPS = 968, 20, 12  # 1,000 tasks


def _metrics(cluster: Cluster, peer: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    status, data = request_once(cluster, peer, "GET", "/metrics")
    assert status == 200, data
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(data.decode()):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[labels] = sample.value
    return out


def _submit(cluster: Cluster, peer: int, specs: list[Json]) -> None:
    body = json.dumps({"tasks": specs}).encode()
    status, data = request_once(cluster, peer, "POST", "/tasks/batch", body, timeout=30)
    assert status == 201, data[:300]


def _all_ended(cluster: Cluster) -> bool:
    views = [cluster.view(n) for n in cluster.ids]
    total = ECHOES + FAILS + SLEEPS
    return all(
        v is not None and sum(v["tasks"][s] for s in ("succeeded", "failed", "cancelled")) == total
        for v in views
    )


def test_metrics_report_the_same_cluster_totals_on_every_peer(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(3, retry_base=0.05, retry_max=0.1)
    leader = cluster.wait_for_leader(expected=3, timeout=START_TIMEOUT)
    _submit(cluster, 1, [{"kind": "sleep", "args": {"seconds": 1.0}}] * SLEEPS)
    cluster.wait_for(
        lambda: (cluster.view(1) or {}).get("running", 0) > 0, 10.0, "a sleep running on 1"
    )
    cluster.kill(1)  # its attempts are lost and retried elsewhere
    _submit(cluster, leader, [{"kind": "echo", "args": i} for i in range(ECHOES)])
    _submit(cluster, leader, [{"kind": "fail", "max_attempts": 2}] * FAILS)
    cluster.restart(1)
    cluster.wait_for(lambda: _all_ended(cluster), 60.0, "every task to end on every peer")

    scraped = {n: _metrics(cluster, n) for n in cluster.ids}
    task_families = ("bullyq_tasks_submitted_total", "bullyq_tasks_finished_total")
    for name in (*task_families, "bullyq_attempts_failed_total", "bullyq_task_run_seconds_count"):
        assert scraped[1][name] == scraped[2][name] == scraped[3][name], name
    finished = scraped[3]["bullyq_tasks_finished_total"]
    outcome = {dict(k)["outcome"]: v for k, v in finished.items() if dict(k)["kind"] == "echo"}
    assert outcome == {"succeeded": ECHOES}
    assert finished[(("kind", "fail"), ("outcome", "failed"), ("queue", "default"))] == FAILS
    failed = {dict(k)["reason"]: v for k, v in scraped[3]["bullyq_attempts_failed_total"].items()}
    assert failed["error"] == 2 * FAILS and failed["worker_lost"] >= 1, failed
    view = cluster.view(3)
    assert view is not None
    succeeded = scraped[3]["bullyq_tasks"][(("queue", "default"), ("state", "succeeded"))]
    assert succeeded == view["tasks"]["succeeded"]
    assert scraped[3]["bullyq_is_leader"][()] == 1 and scraped[1]["bullyq_is_leader"][()] == 0
    assert scraped[2]["bullyq_log_commit_index"][()] <= scraped[3]["bullyq_log_last_index"][()]
    assert set(scraped[3]["bullyq_peer_up"]) == {(("peer", str(n)),) for n in cluster.ids}
    assert scraped[3]["bullyq_disk_write_seconds_count"][()] > 0
    routes = {dict(k)["route"] for k in scraped[3]["bullyq_http_request_duration_seconds_count"]}
    assert {"/tasks/batch", "/cluster"} <= routes
    assert not any(part.isdigit() for route in routes for part in route.split("/")), routes
    assert all(name.startswith("bullyq_") for name in scraped[3])
