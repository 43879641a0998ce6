"""Shared fixtures. `cluster_factory` starts real peer processes (ring 3, see harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Cluster

ClusterFactory = Callable[..., Cluster]


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """`make(size, **overrides)` starts a cluster of `size` peers; all stop at teardown.

    Overrides are `cluster.toml` settings (e.g. `failure_timeout=1.0`). Each cluster keeps
    its config and peer logs under the test's `tmp_path` (pytest keeps recent ones).
    """
    clusters: list[Cluster] = []

    def make(size: int, start: bool = True, **overrides: Any) -> Cluster:
        cluster = Cluster(size, tmp_path / f"cluster-{len(clusters) + 1}", overrides)
        clusters.append(cluster)
        if start:
            cluster.start_all()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop_all()
