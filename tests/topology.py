"""Where a test's queue lives: one Redis node, or the session's Redis Cluster.

Pipeline position: outside the pipeline; the one description of the Redis topology that the
process tests (tests/consumer), the chaos stacks (tests/chaos) and the cluster tests share,
so a scenario written once runs on either. On a cluster the streams live on three masters
and arq's keys on a single node (``LEVIATHAN_ARQ_REDIS_URL``), as in production.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis

from storage.config import StorageSettings


@dataclass(frozen=True)
class QueueTopology:
    """``redis_url`` as ``LEVIATHAN_REDIS_URL`` takes it; ``env``, what a process needs besides."""

    name: str
    redis_url: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def cluster(self) -> bool:
        return self.env.get("LEVIATHAN_REDIS_CLUSTER") == "1"

    def stream_redis(self) -> Redis:
        """A client of the streams, from the test process (a cluster client on a cluster)."""
        return StorageSettings(redis_url=self.redis_url, redis_cluster=self.cluster).stream_redis()


def single_node(redis_url: str) -> QueueTopology:
    return QueueTopology("node", redis_url)


def on_cluster(cluster_url: str, arq_redis_url: str) -> QueueTopology:
    """Streams on the cluster at ``cluster_url``, arq's keys on the node at ``arq_redis_url``."""
    env = {"LEVIATHAN_REDIS_CLUSTER": "1", "LEVIATHAN_ARQ_REDIS_URL": arq_redis_url}
    return QueueTopology("cluster", cluster_url, env)
