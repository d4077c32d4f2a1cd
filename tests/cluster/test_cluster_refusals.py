"""A cluster node addressed as a single node: both tiers stop at start with one line
carrying Redis' MOVED and the setting that fixes it, never a bare exception name."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.crc import key_slot

from consumer.settings import ConsumerSettings
from storage.queue import StreamLayout
from tests.cluster_support import RedisClusterServers
from tests.consumer.process_support import consumer_env, refusal_line

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("tier", ["ingest", "consumer"])
def test_a_cluster_node_without_cluster_mode_is_named(
    tier: str, cluster_url: str, redis_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    owner = redis_cluster.node_of_slot(key_slot(StreamLayout().meta.encode()))
    other = next(n for n in redis_cluster.masters() if n is not owner)
    url = f"redis://127.0.0.1:{other.port}/0"
    settings = ConsumerSettings(redis_url=url, partitions=2, ndjson_dir=tmp_path)
    env = consumer_env(settings, url, LEVIATHAN_CONTROL_PLANE_TOKEN="t0k3n-for-the-refusal")
    line = refusal_line(tier, env)
    assert "MOVED" in line
    assert "LEVIATHAN_REDIS_CLUSTER=1" in line
