"""The private cluster fixture itself: six nodes, three masters, every slot served."""

from __future__ import annotations

import subprocess

from redis.crc import key_slot

from tests.cluster_support import MASTERS, RedisClusterServers


def test_cluster_serves_every_slot_on_three_masters(
    redis_cluster: RedisClusterServers, cluster_url: str
) -> None:
    info = redis_cluster.nodes[0].cli("CLUSTER", "INFO")
    assert "cluster_state:ok" in info
    assert "cluster_slots_assigned:16384" in info
    assert len(redis_cluster.masters()) == MASTERS
    assert cluster_url.count("redis://") == MASTERS
    owner = redis_cluster.node_of_slot(key_slot(b"{0}"))
    # a key is refused with MOVED by a master that does not own its slot
    other = next(n for n in redis_cluster.masters() if n is not owner)
    out = subprocess.run(
        ["redis-cli", "-p", str(other.port), "SET", "{0}", "x"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "MOVED" in out.stdout + out.stderr
