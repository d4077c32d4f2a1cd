"""The group-commit publisher against a real Redis: batching, per-entry errors, outages.

The publisher keeps one connection and writes XADDs as raw RESP; these tests check the
things that shortcut must not break: every entry lands exactly once with the id Redis
gave it, one refused XADD fails only its own request, a killed connection is replaced,
an unreachable Redis answers 503 instead of hanging, and stop() finishes queued work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from ingest.cluster_publisher import ClusterPublisher
from ingest.publisher import Publisher
from webcore.errors import Unavailable, Unconfirmed

FIELDS = {b"v": b"1", b"bundle": b'{"x":"\xc3\xa9\\r\\n"}', b"received_at": b"1.5", b"token": b"t"}


@pytest.fixture
async def publisher(redis_client: Redis) -> AsyncIterator[tuple[Publisher, list[int]]]:
    batches: list[int] = []
    pub = Publisher(redis_client, max_batch=64, timeout=2.0, retry_after=1, on_batch=batches.append)
    pub.start()
    try:
        yield pub, batches
    finally:
        await pub.stop()


async def test_concurrent_publishes_share_pipelines(
    publisher: tuple[Publisher, list[int]], redis_client: Redis
) -> None:
    pub, batches = publisher
    streams = [f"s:{{{i % 3}}}" for i in range(300)]
    ids = await asyncio.gather(*(pub.publish(s, FIELDS) for s in streams))
    assert sum(batches) == 300
    assert len(batches) < 300
    assert max(batches) <= 64
    stored = {}
    for p in range(3):
        for entry_id, fields in await redis_client.xrange(f"s:{{{p}}}"):
            stored[f"s:{{{p}}}", entry_id.decode()] = fields
    # each request got the id of its own entry, and nothing was written twice
    assert sorted(stored) == sorted(zip(streams, ids, strict=True))
    assert all(fields == FIELDS for fields in stored.values())


async def test_refused_xadd_fails_only_its_request(
    publisher: tuple[Publisher, list[int]], redis_client: Redis
) -> None:
    pub, _ = publisher
    await redis_client.set("not-a-stream", "x")  # XADD answers WRONGTYPE
    results = await asyncio.gather(
        pub.publish("s:{0}", FIELDS),
        pub.publish("not-a-stream", FIELDS),
        pub.publish("s:{1}", FIELDS),
        return_exceptions=True,
    )
    assert isinstance(results[1], Unavailable)
    assert all(isinstance(r, str) for r in (results[0], results[2]))
    assert await redis_client.xlen("s:{0}") == 1
    assert await redis_client.xlen("s:{1}") == 1
    assert isinstance(await pub.publish("s:{0}", FIELDS), str)  # connection still in sync


async def test_killed_connection_is_replaced(
    publisher: tuple[Publisher, list[int]], redis_client: Redis
) -> None:
    pub, _ = publisher
    await pub.publish("s:{0}", FIELDS)
    conn = pub._conn  # the publisher's own connection; kill exactly that one (shared Redis)
    assert conn is not None
    await conn.send_command("CLIENT", "ID")
    client_id = await conn.read_response()
    assert await redis_client.client_kill_filter(_id=client_id) == 1
    outcomes: list[str | None] = []
    for _ in range(3):  # the first may see the dead socket; later ones reconnect
        try:
            outcomes.append(await pub.publish("s:{0}", FIELDS))
        except Unavailable:
            outcomes.append(None)
    assert isinstance(outcomes[-1], str)
    assert await redis_client.xlen("s:{0}") == 1 + sum(o is not None for o in outcomes)


async def test_unreachable_redis_is_unavailable_for_every_waiter() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    pub = Publisher(dead, max_batch=4, timeout=0.5, retry_after=3)
    pub.start()
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(pub.publish("s:{0}", FIELDS) for _ in range(10)), return_exceptions=True
            ),
            5,
        )
        assert all(isinstance(r, Unavailable) and r.headers["Retry-After"] == "3" for r in results)
    finally:
        await pub.stop()
        await dead.aclose()


async def test_stop_finishes_queued_entries_then_refuses(redis_client: Redis) -> None:
    pub = Publisher(redis_client, max_batch=8, timeout=2.0, retry_after=1)
    pub.start()
    waiting = [asyncio.ensure_future(pub.publish("s:{0}", FIELDS)) for _ in range(50)]
    await asyncio.sleep(0)  # all 50 queued
    await pub.stop()
    assert all(isinstance(w.result(), str) for w in waiting)
    assert await redis_client.xlen("s:{0}") == 50
    with pytest.raises(Unavailable):
        await pub.publish("s:{0}", FIELDS)


async def test_requests_of_the_next_loop_pass_join_the_batch(
    publisher: tuple[Publisher, list[int]],
) -> None:
    pub, batches = publisher
    first = asyncio.ensure_future(pub.publish("s:{0}", FIELDS))
    await asyncio.sleep(0)  # the first XADD is queued and the drain task woken
    second = asyncio.ensure_future(pub.publish("s:{0}", FIELDS))
    ids = await asyncio.gather(first, second)
    assert batches == [2]
    assert ids[0] < ids[1]  # same stream, one pipeline, in the order they were queued


async def test_redis_that_never_answers_is_unavailable_after_the_batch_timeout() -> None:
    # The publisher's connection has no socket timeout of its own: the batch timeout must
    # bound a round trip whose replies never come.
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = Redis.from_url(f"redis://127.0.0.1:{port}/0")
    pub = Publisher(silent, max_batch=4, timeout=0.3, retry_after=2)
    pub.start()
    try:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            *(pub.publish("s:{0}", FIELDS) for _ in range(6)), return_exceptions=True
        )
        assert all(isinstance(r, Unavailable) for r in results)
        assert asyncio.get_running_loop().time() - started < 3
    finally:
        await pub.stop()
        await silent.aclose()
        server.close()
        await server.wait_closed()


async def test_connection_dropped_while_idle_is_replaced_before_the_next_batch(
    redis_url: str, redis_client: Redis
) -> None:
    client = Redis.from_url(redis_url, health_check_interval=30)
    pub = Publisher(client, max_batch=8, timeout=2.0, retry_after=1)
    pub.start()
    try:
        await pub.publish("s:{0}", FIELDS)
        conn = pub._conn
        assert conn is not None
        await conn.send_command("CLIENT", "ID")
        assert await redis_client.client_kill_filter(_id=await conn.read_response()) == 1
        pub._used_at -= 60  # idle for longer than the health-check interval
        # the PING finds the connection dead; the batch goes out on a new one
        assert isinstance(await pub.publish("s:{0}", FIELDS), str)
        assert await redis_client.xlen("s:{0}") == 2
    finally:
        await pub.stop()
        await client.aclose()


class _Scripted(Publisher):
    """A node publisher that fails with the next error of a script, then succeeds."""

    def __init__(self, errors: list[Unavailable]) -> None:
        super().__init__(None, max_batch=1, timeout=1, retry_after=1)  # type: ignore[arg-type]
        self.errors = errors

    @property
    def running(self) -> bool:
        return True

    def start(self) -> None:
        pass

    async def publish(self, stream: str, fields: dict[bytes, bytes]) -> str:
        if self.errors:
            raise self.errors.pop(0)
        return "1-0"


class _OneNode:
    """The part of a cluster client the router uses: the node for a stream."""

    async def node_for(self, stream: str) -> object:
        return self


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        # written, unconfirmed, then refused until the deadline: it may be queued → 504
        (["unconfirmed", *["unreachable"] * 50], Unconfirmed),
        (["unreachable"] * 50, Unavailable),
    ],
)
async def test_the_cluster_router_never_answers_503_after_an_unconfirmed_attempt(
    script: list[str], expected: type[Unavailable]
) -> None:
    errors: list[Unavailable] = [
        Unconfirmed("may or may not be queued", 1)
        if kind == "unconfirmed"
        else Unavailable("The queue is unreachable.", 1)
        for kind in script
    ]
    node = _Scripted(errors)
    router = ClusterPublisher(
        _OneNode(),  # type: ignore[arg-type]
        lambda _: node,
        timeout=0.3,
        retry_after=1,
    )
    router.start()
    with pytest.raises(Unavailable) as caught:
        await router.publish("s:{0}", FIELDS)
    assert type(caught.value) is expected
    assert caught.value.status == (504 if expected is Unconfirmed else 503)
    assert len(node.errors) < len(script) - 1  # it was retried meanwhile


async def test_the_cluster_router_retries_an_unconfirmed_attempt_into_a_2xx() -> None:
    node = _Scripted([Unconfirmed("may or may not be queued", 1)])
    router = ClusterPublisher(
        _OneNode(),  # type: ignore[arg-type]
        lambda _: node,
        timeout=5,
        retry_after=1,
    )
    router.start()
    assert await router.publish("s:{0}", FIELDS) == "1-0"
