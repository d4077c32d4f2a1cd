"""Shared fixtures: real Redis and PostgreSQL for integration tests.

The tests never touch data they did not create. Redis: a private ``redis-server`` on a free
loopback port, started once per session in a temp dir (nothing on disk, gone with the
session); ``LEVIATHAN_TEST_REDIS_URL`` points them at another Redis instead, which they then
flush freely. PostgreSQL: every test creates its own ``lvt_<random>`` database on the server
at ``LEVIATHAN_TEST_POSTGRES_URL`` and drops it afterwards. Two test runs on one host do
not collide.

On a developer machine without the services, integration tests skip with the reason. CI
sets ``LEVIATHAN_REQUIRE_SERVICES=1`` so a missing service fails the run instead of
silently skipping the tests that matter most.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis

from leviathan_cp.ports import free_port
from tests.cluster_support import RedisClusterServers
from tests.topology import QueueTopology, on_cluster, single_node

TEST_POSTGRES_URL = os.environ.get(
    "LEVIATHAN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(autouse=True)
def _private_ndjson_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings built without an explicit ``ndjson_dir`` must not write into the checkout's
    ``./.leviathan``: point the env default at a fresh temp dir for every test."""
    monkeypatch.setenv("LEVIATHAN_NDJSON_DIR", str(tmp_path_factory.mktemp("ndjson")))


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1
        ):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, default_port: int) -> None:
    if _reachable(url, default_port):
        return
    _missing(f"{name} not reachable at {urlsplit(url).netloc}")


def _missing(message: str) -> None:
    if os.environ.get("LEVIATHAN_REQUIRE_SERVICES") == "1":
        pytest.fail(message + " (LEVIATHAN_REQUIRE_SERVICES=1: integration tests must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def test_redis_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis the session's tests own: a private ``redis-server``, or the one named by
    ``LEVIATHAN_TEST_REDIS_URL`` (whose database the tests flush)."""
    explicit = os.environ.get("LEVIATHAN_TEST_REDIS_URL")
    if explicit:
        require_service("Redis", explicit, 6379)
        yield explicit
        return
    if shutil.which("redis-server") is None:
        _missing(
            "redis-server not installed and LEVIATHAN_TEST_REDIS_URL not set: the tests only "
            "use a Redis they start themselves or one you name for them to flush"
        )
    from tests.chaos.chaos_support import Child, wait_port

    workdir = tmp_path_factory.mktemp("test-redis")
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    child = Child(f"test-redis-{port}", argv, workdir / "redis.log", dict(os.environ))
    child.start()
    try:
        wait_port(port, 15, child, ping=b"PING\r\n")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        child.stop()


@pytest.fixture
def redis_url(test_redis_base: str) -> str:
    """URL of the session's test Redis, flushed before each test."""

    async def flush() -> None:
        client = aioredis.Redis.from_url(test_redis_base)
        try:
            await client.flushdb()
        finally:
            await client.aclose()

    asyncio.run(flush())
    return test_redis_base


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """DSN of a fresh, empty PostgreSQL database, dropped after the test."""
    require_service("PostgreSQL", TEST_POSTGRES_URL, 5432)
    import asyncpg

    name = f"lvt_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(TEST_POSTGRES_URL)
    dsn = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))

    async def admin(sql: str) -> None:
        con = await asyncpg.connect(TEST_POSTGRES_URL)
        try:
            await con.execute(sql)
        finally:
            await con.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield dsn
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A private 3-master Redis Cluster with one replica each, shared by the session.

    Started on first use only; skips without redis-server/redis-cli unless
    ``LEVIATHAN_REQUIRE_SERVICES=1``, where their absence fails the run.
    """
    missing = [tool for tool in ("redis-server", "redis-cli") if shutil.which(tool) is None]
    if missing:
        message = f"{' and '.join(missing)} not installed: no Redis Cluster to test against"
        if os.environ.get("LEVIATHAN_REQUIRE_SERVICES") == "1":
            pytest.fail(message + " (LEVIATHAN_REQUIRE_SERVICES=1: cluster tests must run)")
        pytest.skip(message)
    servers = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def cluster_url(redis_cluster: RedisClusterServers) -> str:
    """Seed list of the session's cluster, every master flushed and the cluster ok."""
    redis_cluster.wait_ok(30)
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(params=["node", "cluster"])
def queue_topology(request: pytest.FixtureRequest) -> QueueTopology:
    """The session's single test Redis, then the session's cluster (started on first use),
    each flushed: a test taking this runs once on each."""
    redis_url = str(request.getfixturevalue("redis_url"))
    if request.param == "cluster":
        return on_cluster(str(request.getfixturevalue("cluster_url")), redis_url)
    return single_node(redis_url)
