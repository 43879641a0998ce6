"""Shared fixtures. `cluster_factory` starts real peer processes (ring 3, see harness.py).

Every test that starts peer processes (through `cluster_factory`, or in a
`test_processes_*` file) is marked `processes`, so `pytest -m "not processes"` runs the
fast rings (pure machines and the simulator) alone, in seconds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster

ClusterFactory = Callable[..., Cluster]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        in_process_file = item.path.name.startswith("test_processes_")
        if in_process_file or "cluster_factory" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.processes)


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """`make(size, **overrides)` starts a cluster of `size` peers; all stop at teardown.

    Overrides are `cluster.toml` settings (e.g. `failure_timeout=1.0`). Each cluster keeps
    its config and peer logs under the test's `tmp_path` (pytest keeps recent ones).
    """
    clusters: list[Cluster] = []

    def make(size: int, start: bool = True, token: str | None = None, **overrides: Any) -> Cluster:
        cluster = Cluster(size, tmp_path / f"cluster-{len(clusters) + 1}", overrides)
        cluster.token = token  # (for a cluster with API tokens: sent with every request)
        clusters.append(cluster)
        if start:
            cluster.start_all()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop_all()
