"""The Redis client holding the partition streams: one node or a Redis Cluster.

Pipeline position: every process that touches the streams (ingest's publisher, lag gauge,
stats and waiters; the consumer's reader, maintenance and dead-letter commands) gets its
client here, so ``LEVIATHAN_REDIS_CLUSTER`` is honoured in one place. With it, the
``LEVIATHAN_REDIS_URL`` value is a comma-separated list of seed nodes (``redis://`` or
``rediss://``, with user and password) and the client is redis-py's
:class:`~redis.asyncio.cluster.RedisCluster`, which follows MOVED/ASK and refreshes its
slot map after a failover. arq never gets this client: it keeps its own single node
(``LEVIATHAN_ARQ_REDIS_URL``).

The cluster client offers the same command methods as the single-node one for everything
the tiers send (single-key commands, or keys of one partition's slot), so callers keep
the :class:`~redis.asyncio.Redis` type; code that needs a transaction inside one slot asks
:func:`is_cluster` first.
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ResponseError

SCHEMES = ("redis://", "rediss://")


def seed_urls(value: str) -> list[str]:
    """The comma-separated entries of ``LEVIATHAN_REDIS_URL``, stripped, none empty."""
    seeds = [part.strip() for part in value.split(",")]
    if not seeds or any(not seed for seed in seeds):
        raise ValueError("an empty entry in the comma-separated list of Redis nodes")
    return seeds


def check_url(value: str, *, cluster: bool) -> None:
    """Raise ``ValueError`` with one line when ``value`` cannot name the stream Redis."""
    seeds = seed_urls(value)
    if not cluster:
        if len(seeds) > 1:
            raise ValueError("several nodes are only accepted with LEVIATHAN_REDIS_CLUSTER=1")
        if not seeds[0].startswith((*SCHEMES, "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return
    for seed in seeds:
        if not seed.startswith(SCHEMES):
            raise ValueError(
                f"cluster seed {_redacted(seed)} must start with redis:// or rediss://"
            )
        parts = urlsplit(seed)
        if not parts.hostname:
            raise ValueError(f"cluster seed {_redacted(seed)} names no host")
        if parts.path.strip("/") not in ("", "0"):
            raise ValueError("a Redis Cluster has only database 0; drop the /N of the URL")


def _redacted(url: str) -> str:
    """The URL without its user and password, for an error line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def redis_client(url: str, *, cluster: bool, **kwargs: Any) -> Redis:
    """A client for the stream Redis, not yet connected.

    ``kwargs`` are connection options both clients accept (``socket_timeout``,
    ``socket_connect_timeout``, ``health_check_interval``, ``retry``…). In cluster mode the
    user, password and TLS options of the first seed apply to every node, as a cluster
    shares one ACL and one certificate authority.
    """
    check_url(url, cluster=cluster)
    if not cluster:
        single: Redis = Redis.from_url(url, **kwargs)
        return single
    seeds = seed_urls(url)
    options: dict[str, Any] = dict(parse_url(seeds[0]))
    nodes = []
    for seed in seeds:
        parts = urlsplit(seed)
        nodes.append(ClusterNode(parts.hostname or "127.0.0.1", parts.port or 6379))
    for key in ("host", "port", "db", "path"):
        options.pop(key, None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True
    options.update(kwargs)
    client = RedisCluster(startup_nodes=nodes, **options)
    # Same command methods for every call the tiers make (see the module docstring).
    return cast("Redis", client)


def is_cluster(redis: Redis) -> bool:
    """True for a client made in cluster mode (its pipelines hold no MULTI)."""
    return isinstance(redis, RedisCluster)  # type: ignore[unreachable, unused-ignore]


def is_missing(exc: ResponseError) -> bool:
    """True when Redis' refusal says the stream or the group does not exist (yet).

    Every other refusal (``WRONGTYPE``, ``CLUSTERDOWN``, ``LOADING``, ``NOPERM``, ``MOVED``
    from a client pointed at the wrong node…) is a real fault and must reach the operator
    with its text instead of being read as "nothing there".
    """
    text = str(exc)
    return text.startswith("NOGROUP") or "no such key" in text.lower()
