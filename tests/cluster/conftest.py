"""Fixtures of the cluster tests: the consumer suite's backend factory (each real backend),
the chaos suite's report, and a chaos stack whose streams live on the session's cluster.

The cluster itself (``redis_cluster``, ``cluster_url``) is session-scoped in tests/conftest.py;
arq's keys go to the single-node test database (``redis_url``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.chaos.chaos_stack import Stack
from tests.chaos.conftest import report
from tests.consumer.conftest import backend_settings

__all__ = ["backend_settings", "cluster_stack", "report"]
ClusterStackFactory = Callable[..., Stack]


@pytest.fixture
async def cluster_stack(
    tmp_path: Path, cluster_url: str, redis_url: str, postgres_url: str
) -> AsyncIterator[ClusterStackFactory]:
    """``cluster_stack(backend="postgres", **env)``: ingest + consumer on the cluster, not
    started."""
    made: list[Stack] = []

    def make(backend: str = "postgres", **env: str) -> Stack:
        stack = Stack(
            tmp_path / f"stack{len(made)}",
            cluster_url,
            backend,
            postgres_url if backend == "postgres" else None,
            LEVIATHAN_REDIS_CLUSTER="1",
            LEVIATHAN_ARQ_REDIS_URL=redis_url,
            **env,
        )
        stack.workdir.mkdir()
        made.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in made:
            stack.kill_all()
