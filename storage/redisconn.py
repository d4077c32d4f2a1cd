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
the :class:`~redis.asyncio.Redis` type. What it cannot send goes through the helpers here
on either topology: :func:`atomic` (a MULTI inside one slot), :func:`subscriber`
(pub/sub), :meth:`StreamCluster.node_for` / :meth:`StreamCluster.masters` (one node's
client: the publisher's raw pipelines, per-node INFO), :func:`after_failure` (re-read the
slot map).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection, parse_url
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ExecAbortError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
    client = StreamCluster(startup_nodes=nodes, **options)  # type: ignore[abstract]
    # Same command methods for every call the tiers make (see the module docstring).
    return cast("Redis", client)


class StreamCluster(RedisCluster):
    """redis-py's cluster client plus a single-node client per master, for what the cluster
    client cannot send: a MULTI inside one slot, a pub/sub subscription, the publisher's raw
    pipelines. A node client is made on first use and kept; :meth:`refresh` re-reads the
    slot map after a MOVED, an ASK or a failover."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._node_clients: dict[str, Redis] = {}

    async def node_for(self, key: str | None = None) -> Redis:
        """The single-node client of the master serving ``key``'s slot (any node, replicas
        included, when ``key`` is None)."""
        await self.initialize()
        node = self.get_node_from_key(key) if key is not None else self.get_random_node()
        if node is None:  # the slot has no master right now (failover in progress)
            raise RedisConnectionError(f"no master serves the slot of {key!r}")
        return self._client_of(node)

    def _client_of(self, node: ClusterNode) -> Redis:
        client = self._node_clients.get(node.name)
        if client is None:
            options = dict(self.connection_kwargs)
            options.pop("response_callbacks", None)
            connection_class = options.pop("connection_class", Connection)
            pool = ConnectionPool(
                connection_class=connection_class, host=node.host, port=node.port, **options
            )
            client = Redis(connection_pool=pool)
            self._node_clients[node.name] = client
        return client

    async def masters(self) -> list[Redis]:
        """The single-node client of every master (per-node figures such as INFO)."""
        await self.initialize()
        return [self._client_of(node) for node in self.get_primaries()]

    async def refresh(self) -> None:
        """Re-read the slot map from the nodes (after MOVED/ASK or a lost master).

        Through redis-py's own re-initialisation, which runs under the client's lock: the
        nodes manager's ``initialize`` is not safe to run twice at once (two requests that
        lost the same master re-read the map together, and one iterated the startup nodes
        while the other changed them). Calls that meet a re-read in progress wait for it
        and take its map."""
        self._initialize = True
        await self.initialize()

    async def aclose(self) -> None:
        clients, self._node_clients = list(self._node_clients.values()), {}
        for client in clients:
            await client.aclose(close_connection_pool=True)  # a pool it was handed
        await super().aclose()


def is_cluster(redis: Redis) -> bool:
    """True for a client made in cluster mode (its pipelines hold no MULTI)."""
    return isinstance(redis, StreamCluster)  # type: ignore[unreachable, unused-ignore]


def as_cluster(redis: Redis) -> StreamCluster | None:
    """The cluster client behind ``redis``, or None for a single node."""
    if isinstance(redis, StreamCluster):  # type: ignore[unreachable, unused-ignore]
        return redis  # type: ignore[unreachable, unused-ignore]
    return None


REDIRECTS = (AskError, TryAgainError, ClusterDownError, ExecAbortError)  # MovedError is an AskError


def is_redirect(exc: BaseException) -> bool:
    """A cluster's "not here / not now" reply (or the MULTI it aborted): nothing of the
    command ran, so a retry on the node the refreshed slot map names is safe."""
    return isinstance(exc, REDIRECTS)


ATOMIC_ATTEMPTS = 5


async def atomic(redis: Redis, key: str, fill: Callable[[Pipeline], object]) -> list[Any]:
    """The commands ``fill`` queues, run as one MULTI/EXEC on the node serving ``key``'s
    slot; every key they touch must share ``key``'s hash tag.

    On a single node this is a plain transaction pipeline. On a cluster it goes to the
    master of the slot; a redirect (the slot moved, a failover happened) refreshes the slot
    map and tries again, as a refused MULTI ran none of its commands.
    """
    cluster = as_cluster(redis)
    for attempt in range(ATOMIC_ATTEMPTS):
        target = redis if cluster is None else await cluster.node_for(key)
        async with target.pipeline(transaction=True) as pipe:
            fill(pipe)
            try:
                return await pipe.execute()
            except ResponseError as exc:
                if cluster is None or not is_redirect(exc) or attempt == ATOMIC_ATTEMPTS - 1:
                    raise
            except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError):
                if cluster is not None:
                    await _quiet_refresh(cluster)
                raise  # it may have run: the caller decides whether a retry is safe
        await _quiet_refresh(cluster)
        await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


async def _quiet_refresh(cluster: StreamCluster) -> None:
    """Refresh the slot map; a cluster that cannot answer now is retried on the next use."""
    with contextlib.suppress(RedisError, OSError):
        await cluster.refresh()


async def after_failure(redis: Redis) -> None:
    """After a lost connection: on a cluster, re-read the slot map (a failover may have
    moved the slots to a replica); on a single node nothing to do."""
    cluster = as_cluster(redis)
    if cluster is not None:
        await _quiet_refresh(cluster)


async def subscriber(redis: Redis) -> Redis:
    """A client that can SUBSCRIBE: ``redis`` itself, or on a cluster one node's client
    (a cluster delivers every PUBLISH to every node's subscribers)."""
    cluster = as_cluster(redis)
    return redis if cluster is None else await cluster.node_for(None)


def is_missing(exc: ResponseError) -> bool:
    """True when Redis' refusal says the stream or the group does not exist (yet).

    Every other refusal (``WRONGTYPE``, ``CLUSTERDOWN``, ``LOADING``, ``NOPERM``, ``MOVED``
    from a client pointed at the wrong node…) is a real fault and must reach the operator
    with its text instead of being read as "nothing there".
    """
    text = str(exc)
    return text.startswith("NOGROUP") or "no such key" in text.lower()


def refusal_line(exc: BaseException) -> str:
    """Redis' own words for an error at start, with the likely fix for a cluster node
    addressed as a single node (MOVED/ASK/CROSSSLOT)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, AskError) or any(w in text for w in ("MOVED", "ASK ", "CROSSSLOT")):
        text += " (a Redis Cluster node: set LEVIATHAN_REDIS_CLUSTER=1 and list seed nodes)"
    return text
