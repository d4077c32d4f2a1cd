"""Group commit on a Redis Cluster: one publisher per master, requests routed by slot.

Pipeline position: replaces :class:`ingest.publisher.Publisher` in ``create_app`` when
``LEVIATHAN_REDIS_CLUSTER=1``. Each master gets a :class:`Publisher` of its own (its own
connection, drain task and group-commit pipelines), made on first use, so the nodes'
pipelines go out concurrently and one slow node delays only its partitions. A request goes
to the publisher of the master its stream's slot maps to. When that fails — the slot moved
(MOVED, ASK), the master died and its replica is taking over, a connection broke — the slot
map is re-read and the request sent again to whichever master now owns the slot, until
``timeout`` has passed; only then is it answered 503 — or 504 (:class:`webcore.errors.
Unconfirmed`) when any attempt was written but never confirmed, since that one may have
been added. A node publisher waits for the replies of a written pipeline up to its reply
wait (``LEVIATHAN_REDIS_REPLY_WAIT_SECONDS``), so a stalled master answers late, not 503.
A retry may add an entry twice (a connection lost after Redis added it): the consumers
store each ``event_id`` once, so a duplicate entry is a duplicate, never a second copy.
Redis out of memory is answered at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ingest.publisher import Publisher
from storage.redisconn import StreamCluster, after_failure
from webcore.errors import Unavailable, Unconfirmed

log = logging.getLogger(__name__)
T = TypeVar("T")
PublisherFactory = Callable[[Redis], Publisher]
RETRY_PAUSE_S = 0.05  # first pause before re-reading the slot map; doubles, at most 0.5 s


class ClusterPublisher(Publisher):
    """The :class:`Publisher` interface over one node publisher per master."""

    def __init__(
        self,
        cluster: StreamCluster,
        node_publisher: PublisherFactory,
        *,
        timeout: float,
        retry_after: int,
    ) -> None:
        super().__init__(cluster, max_batch=1, timeout=timeout, retry_after=retry_after)  # type: ignore[arg-type]
        self._cluster = cluster
        self._node_publisher = node_publisher
        self._nodes: dict[int, Publisher] = {}  # by id() of the node's client
        self._started = False

    @property
    def running(self) -> bool:
        return self._started

    def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        """Finish what each node publisher has queued."""
        self._started = False
        nodes, self._nodes = list(self._nodes.values()), {}
        await asyncio.gather(*(node.stop() for node in nodes))

    async def publish(self, stream: str, fields: dict[bytes, bytes]) -> str:
        return await self._routed(stream, lambda node: node.publish(stream, fields))

    async def publish_atomic(self, stream: str, entries: list[dict[bytes, bytes]]) -> list[str]:
        # every chunk goes to one stream: one slot, one node, one MULTI
        return await self._routed(stream, lambda node: node.publish_atomic(stream, entries))

    async def _node_for(self, stream: str) -> Publisher:
        client = await self._cluster.node_for(stream)
        node = self._nodes.get(id(client))
        if node is None or not node.running:
            node = self._node_publisher(client)
            node.start()
            self._nodes[id(client)] = node
        return node

    async def _routed(self, stream: str, call: Callable[[Publisher], Awaitable[T]]) -> T:
        if not self._started:
            raise Unavailable("The queue publisher is not running.", self._retry_after)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        pause = RETRY_PAUSE_S
        unconfirmed: Unconfirmed | None = None  # an attempt that may have been added
        while True:
            try:
                return await call(await self._node_for(stream))
            except Unavailable as exc:
                if isinstance(exc, Unconfirmed):
                    unconfirmed = exc
                failure: Unavailable | Unconfirmed = exc
                final = exc.reason == "redis_oom"
            except (RedisError, OSError) as exc:  # the slot map could not be read
                failure = Unavailable(f"The queue is unreachable ({exc}).", self._retry_after)
                final = False
            if final or loop.time() + pause >= deadline:
                # an attempt that may have been added outranks a later refusal
                raise unconfirmed or failure
            problem = failure.detail
            log.info("publish to %s retried after a fresh slot map: %s", stream, problem)
            await asyncio.sleep(pause)
            await after_failure(self._cluster)  # type: ignore[arg-type]
            pause = min(pause * 2, 0.5)
