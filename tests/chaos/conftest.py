"""Fixtures of the chaos suite: private Redis, private PostgreSQL cluster, stack factory.

Pipeline position: outside the pipeline; these give each scenario services it may break
without disturbing the shared Redis/PostgreSQL other tests use. Every fixture stops what it
started in its finalizer, also when the test fails. Each scenario's figures (events
accepted, 503s, lost, duplicated, ...) are collected in :data:`REPORT` and printed in the
terminal summary, so a plain ``pytest tests/chaos -v`` shows them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest.terminal import TerminalReporter

from tests.chaos.chaos_stack import StackFactory, stack_factory
from tests.chaos.chaos_support import PgCluster, RedisServer, pg_bindir
from tests.topology import single_node

REPORT: list[tuple[str, dict[str, Any]]] = []


def _missing(what: str) -> None:
    if os.environ.get("LEVIATHAN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} (LEVIATHAN_REQUIRE_SERVICES=1: the chaos suite must run)")
    pytest.skip(what)


@pytest.fixture
def chaos_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with AOF (appendfsync always) on a temp dir, started."""
    if shutil.which("redis-server") is None:
        _missing("redis-server is not installed")
    server = RedisServer(tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.crash()


@pytest.fixture
def own_postgres() -> Iterator[PgCluster]:
    """A private PostgreSQL cluster on a free port, started; removed afterwards.

    Its directory is made with ``tempfile`` under /tmp, not under pytest's 0700 tmp_path,
    because the server runs as ``postgres`` and must reach it.
    """
    bindir = pg_bindir()
    if bindir is None:
        _missing("initdb not found (pg_config --bindir, /usr/lib/postgresql/*/bin)")
    assert bindir is not None
    cluster = PgCluster(bindir, Path(tempfile.mkdtemp(prefix="leviathan-chaos-pg-")))
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(params=["postgres", "ndjson"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_stack(
    tmp_path: Path, chaos_redis: RedisServer, postgres_url: str
) -> Iterator[StackFactory]:
    """``make_stack(backend, dsn=None, **env)``: a Stack on the private Redis, not started.

    Without a DSN the postgres backend gets a fresh database on the shared server
    (``postgres_url``). Every stack made is stopped when the test ends.
    """
    with stack_factory(tmp_path, single_node(chaos_redis.url), postgres_url) as make:
        yield make


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], None]:
    """Record this scenario's figures for the terminal summary (and as a junit property)."""

    def add(figures: dict[str, Any]) -> None:
        REPORT.append((request.node.name, figures))
        for key, value in figures.items():
            request.node.user_properties.append((key, value))

    return add


def pytest_terminal_summary(terminalreporter: TerminalReporter) -> None:
    if not REPORT:
        return
    terminalreporter.section("chaos figures")
    for name, figures in REPORT:
        terminalreporter.write_line(f"{name}: {figures}")
