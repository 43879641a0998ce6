"""`GET /metrics`: the peer's Prometheus metrics, with prometheus-client.

`ClusterCollector` reads the core at scrape time: task totals and histograms kept by
applying the log (`peer.protocol.stats`, so every peer reports the same cluster-wide
numbers), tasks by state and queue, the election and the log, replication lag on the
leader, peers up, this worker's slots. `PeerMetrics` adds what only the shell sees:
HTTP request durations by route (the route's pattern, never an id) and disk write
durations. Names follow Prometheus' rules: base units, `_total` on counters, and no id
as a label but `peer` (bounded by the cluster's size).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from peer.protocol.membership import Status
from peer.protocol.stats import FAILURE_REASONS
from peer.protocol.stats import Histogram as LogHistogram

if TYPE_CHECKING:
    from peer.runtime.node import Node

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATES_SHOWN = ("blocked", "scheduled", "queued", "running", "succeeded", "failed", "cancelled")


class ClusterCollector:
    """The core's figures, read when Prometheus scrapes (nothing is copied meanwhile)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        yield from self._tasks()
        yield from self._cluster()

    def _tasks(self) -> Iterator[Metric]:
        stats = self.node.core.tasks.stats
        submitted = CounterMetricFamily(
            "bullyq_tasks_submitted", "Tasks submitted (from the log)", labels=["queue", "kind"]
        )
        for (queue, kind), count in sorted(stats.submitted.items()):
            submitted.add_metric([queue, kind], count)
        finished = CounterMetricFamily(
            "bullyq_tasks_finished",
            "Tasks that ended, by outcome (from the log)",
            labels=["queue", "kind", "outcome"],
        )
        for (queue, kind, outcome), count in sorted(stats.finished.items()):
            finished.add_metric([queue, kind, outcome], count)
        failed = CounterMetricFamily(
            "bullyq_attempts_failed", "Attempts that failed, by reason", labels=["reason"]
        )
        for reason in FAILURE_REASONS:
            failed.add_metric([reason], stats.attempts_failed.get(reason, 0))
        by_state = GaugeMetricFamily(
            "bullyq_tasks", "Tasks now, by state and queue", labels=["state", "queue"]
        )
        for queue, counts in sorted(self.node.core.tasks.queue_counts.items()):
            for state in STATES_SHOWN:
                by_state.add_metric([state, queue], counts.get(state, 0))
        yield from (submitted, finished, failed, by_state)
        yield _histogram("bullyq_task_run_seconds", "How long attempts ran", stats.run_seconds)
        yield _histogram(
            "bullyq_task_wait_seconds", "How long tasks waited to start", stats.wait_seconds
        )

    def _cluster(self) -> Iterator[Metric]:
        node, core = self.node, self.node.core
        yield _gauge("bullyq_is_leader", "1 on the ready leader", core.is_ready_leader)
        yield _gauge("bullyq_has_leader", "1 while a ready leader is known", core.leader_is_ready())
        yield _gauge("bullyq_term", "The current election term", core.term)
        changes = node.event_counts.get("became_leader", 0) + node.event_counts.get("following", 0)
        yield CounterMetricFamily(
            "bullyq_leader_changes", "Times this peer saw a new leader", value=changes
        )
        yield CounterMetricFamily(
            "bullyq_elections",
            "Elections this peer started",
            value=node.event_counts.get("election_started", 0),
        )
        yield _gauge("bullyq_log_commit_index", "The commit index", core.replicator.commit_index)
        yield _gauge("bullyq_log_last_index", "The last log index", core.log.last_index)
        lag = GaugeMetricFamily(
            "bullyq_replication_lag_entries",
            "Entries a follower lacks (on the leader)",
            labels=["peer"],
        )
        for peer, behind in sorted(core.replicator.lag().items()):
            lag.add_metric([str(peer)], behind)
        yield lag
        up = GaugeMetricFamily("bullyq_peer_up", "1 for a peer held alive", labels=["peer"])
        now = time.monotonic()
        for peer in (core.id, *core.membership.others):
            up.add_metric([str(peer)], core.membership.status(peer, now) is Status.ALIVE)
        yield up
        yield _gauge("bullyq_worker_slots", "Attempts this peer runs at once", node.config.slots)
        yield _gauge("bullyq_worker_running", "Attempts running here", node.runner.running)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=float(value))


def _histogram(name: str, text: str, histogram: LogHistogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name, text, buckets=histogram.cumulative(), sum_value=histogram.total
    )


class PeerMetrics:
    """One peer's registry: the cluster collector and the shell's own histograms."""

    def __init__(self, node: Node) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ClusterCollector(node))
        self.http = Histogram(
            "bullyq_http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self._routes: dict[tuple[str, str, int], Histogram] = {}  # labelled children
        self.disk = Histogram(
            "bullyq_disk_write_seconds", "Time to write a batch to disk", registry=self.registry
        )
        node.on_disk_write = self.disk.observe

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    @web.middleware
    async def timing(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            elapsed = time.perf_counter() - started
            key = (route, request.method, status)
            child = self._routes.get(key)
            if child is None:  # (routes are patterns, so the keys are few)
                child = self._routes[key] = self.http.labels(route, request.method, str(status))
            child.observe(elapsed)


async def get_metrics(request: web.Request, metrics: PeerMetrics) -> web.Response:
    body = metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
