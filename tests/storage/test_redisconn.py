"""The stream Redis factory: URL checks, one node vs cluster seeds, TLS and passwords."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from consumer.settings import ConsumerSettings
from storage.config import StorageSettings, settings_error_line
from storage.queue import resolve
from storage.redisconn import check_url, is_cluster, is_missing, redis_client


@pytest.mark.parametrize(
    ("url", "cluster", "message"),
    [
        ("http://x:6379", False, "must start with redis://"),
        ("redis://a:1,redis://b:2", False, "only accepted with LEVIATHAN_REDIS_CLUSTER=1"),
        ("redis://a:1,,redis://b:2", True, "an empty entry"),
        ("unix:///tmp/r.sock", True, "must start with redis:// or rediss://"),
        ("redis://a:1/3", True, "only database 0"),
        ("redis://:6379", True, "names no host"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, cluster: bool, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_url(url, cluster=cluster)


def test_seed_secrets_stay_out_of_the_error() -> None:
    with pytest.raises(ValueError, match="seed ftp://b:2 must start") as info:
        check_url("rediss://a:1,ftp://user:hunter2@b:2", cluster=True)
    assert "hunter2" not in str(info.value)


async def test_single_node_by_default() -> None:
    client = redis_client("redis://127.0.0.1:6379/4", cluster=False, socket_timeout=1.5)
    try:
        assert isinstance(client, Redis)
        assert not is_cluster(client)
        assert client.connection_pool.connection_kwargs["db"] == 4
    finally:
        await client.aclose()


async def test_cluster_seeds_tls_and_password() -> None:
    url = "rediss://app:s%40cret@10.0.0.1:7000, rediss://app:s%40cret@10.0.0.2:7001"
    client = redis_client(url, cluster=True, socket_timeout=1.5)
    try:
        assert is_cluster(client)
        assert isinstance(client, RedisCluster)
        names = set(client.nodes_manager.startup_nodes)
        assert names == {"10.0.0.1:7000", "10.0.0.2:7001"}
        kwargs = client.connection_kwargs
        assert kwargs["password"] == "s@cret"
        assert kwargs["username"] == "app"
        assert kwargs["socket_timeout"] == 1.5
        assert "ssl" in str(kwargs["connection_class"]).lower()
    finally:
        await client.aclose()


def test_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEVIATHAN_REDIS_URL", "redis://a:1,redis://b:2")
    with pytest.raises(ValidationError) as info:
        StorageSettings()
    line = settings_error_line(info.value)
    assert "LEVIATHAN_REDIS_URL" in line
    assert "LEVIATHAN_REDIS_CLUSTER=1" in line
    monkeypatch.setenv("LEVIATHAN_REDIS_CLUSTER", "1")
    assert StorageSettings().redis_cluster


def test_cluster_consumer_needs_its_own_arq_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEVIATHAN_REDIS_URL", "redis://a:1,redis://b:2")
    monkeypatch.setenv("LEVIATHAN_REDIS_CLUSTER", "1")
    with pytest.raises(ValidationError) as info:
        ConsumerSettings()
    line = settings_error_line(info.value)
    assert "LEVIATHAN_ARQ_REDIS_URL is required with LEVIATHAN_REDIS_CLUSTER=1" in line
    assert "\n" not in line
    monkeypatch.setenv("LEVIATHAN_ARQ_REDIS_URL", "redis://arq:6379/0")
    assert ConsumerSettings().arq_url == "redis://arq:6379/0"
    monkeypatch.setenv("LEVIATHAN_ARQ_REDIS_URL", "redis://a:1,redis://b:2")
    with pytest.raises(ValidationError, match="LEVIATHAN_ARQ_REDIS_URL: several nodes"):
        ConsumerSettings()


def test_single_node_arq_defaults_to_the_stream_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEVIATHAN_REDIS_URL", "redis://q:6379/2")
    assert ConsumerSettings().arq_url == "redis://q:6379/2"


@pytest.mark.integration
async def test_only_missing_key_or_group_counts_as_missing(redis_client: Redis) -> None:
    with pytest.raises(ResponseError) as no_key:
        await resolve(redis_client.xinfo_groups("absent"))
    assert is_missing(no_key.value)
    await resolve(redis_client.xadd("s", {"f": "v"}))
    with pytest.raises(ResponseError) as no_group:
        await resolve(redis_client.xinfo_consumers("s", "absent"))
    assert is_missing(no_group.value)
    await resolve(redis_client.set("plain", "x"))
    with pytest.raises(ResponseError) as wrong:
        await resolve(redis_client.xinfo_groups("plain"))
    assert not is_missing(wrong.value)
