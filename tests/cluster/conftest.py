"""Fixtures of the cluster tests: the chaos suite's stack factory and report, on the cluster.

The cluster itself (``redis_cluster``, ``cluster_url``) is session-scoped in tests/conftest.py;
arq's keys go to the single-node test database (``redis_url``). The consumer's process
tests run on the cluster too, through the ``queue_topology`` fixture (tests/consumer).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.chaos_stack import StackFactory, stack_factory
from tests.chaos.conftest import report
from tests.topology import on_cluster

__all__ = ["cluster_stack", "report"]


@pytest.fixture
def cluster_stack(
    tmp_path: Path, cluster_url: str, redis_url: str, postgres_url: str
) -> Iterator[StackFactory]:
    """``cluster_stack(backend="postgres", dsn=None, **env)``: ingest + consumer with their
    streams on the cluster, not started."""
    with stack_factory(tmp_path, on_cluster(cluster_url, redis_url), postgres_url) as make:
        yield make
