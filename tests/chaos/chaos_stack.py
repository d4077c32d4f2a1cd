"""The real ingest and consumer processes of one chaos scenario, wired to private services.

Pipeline position: both tiers between the load client and storage. A :class:`Stack` knows
the environment both processes share, starts/restarts each tier and waits until it is
ready, waits until the queue is drained after the chaos, and stops both tiers gracefully
(SIGTERM) so their exit codes can be checked. Settings are tuned for a quick recovery on a
2-core machine (short blocking reads, short storage back-off), not for throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from consumer.settings import ConsumerSettings
from leviathan_cp.ports import free_port
from storage.queue import GROUP, StreamLayout, resolve
from tests.chaos.chaos_support import Child, tier_argv
from tests.consumer.process_support import backlog, backlog_detail
from tests.topology import QueueTopology

TOKEN = "chaos-token-0123456789abcdef"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


PARTITIONS = 4


class Stack:
    """``python -m ingest`` + ``python -m consumer`` against ``redis_url`` and a backend."""

    def __init__(
        self,
        workdir: Path,
        redis_url: str,
        backend: str,
        postgres_dsn: str | None = None,
        **extra_env: str,
    ) -> None:
        self.workdir = workdir
        self.redis_url = redis_url
        self.backend = backend
        self.postgres_dsn = postgres_dsn
        self.api_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIATHAN_", "POSTGRES_"))}
        env.update(
            {
                "LEVIATHAN_CONTROL_PLANE_TOKEN": TOKEN,
                "LEVIATHAN_BACKEND": backend,
                "LEVIATHAN_NDJSON_DIR": str(workdir / "ndjson"),
                "LEVIATHAN_PARTITIONS": str(PARTITIONS),
                "LEVIATHAN_REDIS_URL": redis_url,
                "LEVIATHAN_API_HOST": "127.0.0.1",
                "LEVIATHAN_API_PORT": str(self.api_port),
                "LEVIATHAN_DRAIN_SECONDS": "1",
                "LEVIATHAN_REDIS_TIMEOUT_SECONDS": "1",
                # the same name after every restart: the new process re-reads what the
                # killed one held pending, as a restarted pod with a stable name would
                "HOSTNAME": "chaos-consumer",
                "LEVIATHAN_CONSUMER_HOST": "127.0.0.1",
                "LEVIATHAN_CONSUMER_PORT": str(free_port()),
                "LEVIATHAN_CONSUMER_BATCH": "50",
                "LEVIATHAN_CONSUMER_BLOCK_MS": "100",
                "LEVIATHAN_CONSUMER_RETRY_MAX_S": "0.5",
                "LEVIATHAN_CONSUMER_SHUTDOWN_TIMEOUT_S": "15",
            }
        )
        if postgres_dsn is not None:
            env["POSTGRES_DSN"] = postgres_dsn
        env.update(extra_env)
        self.ingest = Child("ingest", tier_argv("ingest"), workdir / "ingest.log", env)
        self.consumer = Child("consumer", tier_argv("consumer"), workdir / "consumer.log", env)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def consumer_url(self) -> str:
        return f"http://127.0.0.1:{self.consumer.env['LEVIATHAN_CONSUMER_PORT']}"

    @property
    def layout(self) -> StreamLayout:
        return StreamLayout(partitions=PARTITIONS)

    def settings(self) -> ConsumerSettings:
        """Settings to open the same store (and queue) from the test process."""
        return ConsumerSettings(
            backend=self.backend,
            ndjson_dir=self.workdir / "ndjson",
            postgres_dsn=self.postgres_dsn,
            redis_url=self.redis_url,
            redis_cluster=self.ingest.env.get("LEVIATHAN_REDIS_CLUSTER") == "1",
            arq_redis_url=self.ingest.env.get("LEVIATHAN_ARQ_REDIS_URL"),
            partitions=PARTITIONS,
        )

    def _redis(self) -> Redis:
        """A client of the stack's queue: one node, or the cluster (its env says which)."""
        return self.settings().stream_redis()

    async def start_ingest(self) -> None:
        self.ingest.start()
        await self._ready(self.ingest, f"{self.url}/readyz", 30)

    async def start_consumer(self) -> None:
        self.consumer.start()
        await self._ready(self.consumer, f"{self.consumer_url}/readyz", 30)

    async def start(self) -> None:
        await self.start_ingest()
        await self.start_consumer()

    async def _ready(self, child: Child, url: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        timeout = aiohttp.ClientTimeout(total=1)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while time.monotonic() < deadline:
                if not child.alive:
                    raise AssertionError(f"{child.name} exited:\n{child.tail()}")
                try:
                    async with session.get(url) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.1)
        raise AssertionError(f"{child.name} not ready after {seconds} s:\n{child.tail()}")

    async def wait_drained(self, seconds: float) -> None:
        """Until group ``writers`` has nothing pending or undelivered (all committed)."""
        redis = self._redis()
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if not self.consumer.alive:
                    raise AssertionError(f"consumer died:\n{self.consumer.tail()}")
                if await backlog(redis, self.layout) == 0:
                    return
                await asyncio.sleep(0.2)
            left = await backlog(redis, self.layout)
            detail = await backlog_detail(redis, self.layout)
            raise AssertionError(f"{left} entries still queued after {seconds} s:\n{detail}")
        finally:
            await redis.aclose()

    async def backlog(self) -> int:
        """Entries not yet committed: undelivered plus delivered-but-unacked."""
        redis = self._redis()
        try:
            return await backlog(redis, self.layout)
        finally:
            await redis.aclose()

    async def wait_holding(self, seconds: float) -> bool:
        """Until the consumer holds delivered, unacked entries (True), polled every 2 ms on one
        connection, or ``seconds`` passed (False)."""
        redis = self._redis()
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                for stream in self.layout.streams():
                    with contextlib.suppress(ResponseError):
                        if int((await redis.xpending(stream, GROUP))["pending"]) > 0:
                            return True
                await asyncio.sleep(0.002)
            return False
        finally:
            await redis.aclose()

    async def pending(self) -> int:
        """Entries delivered to the consumer but not acked (e.g. held by a killed one)."""
        redis = self._redis()
        try:
            total = 0
            for stream in self.layout.streams():
                with contextlib.suppress(ResponseError):  # stream or group not there yet
                    total += int((await redis.xpending(stream, GROUP))["pending"])
            return total
        finally:
            await redis.aclose()

    async def dead_letters(self) -> int:
        return len(await self.dead_entries())

    async def dead_entries(self) -> list[tuple[str, dict[bytes, bytes]]]:
        """Every entry of every dead stream (the partitions' and the old single one)."""
        redis = self._redis()
        try:
            out = []
            for key in [*self.layout.dead_streams(), self.layout.legacy_dead]:
                out += [(_text(i), f) for i, f in await resolve(redis.xrange(key))]
            return out
        finally:
            await redis.aclose()

    async def probe_consumer(self, path: str) -> tuple[int, str]:
        """GET one of the consumer's own endpoints (/healthz, /readyz, /metrics)."""
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{self.consumer_url}{path}") as resp,
        ):
            return resp.status, await resp.text()

    async def stop(self) -> dict[str, int | None]:
        """SIGTERM both tiers (in parallel, bounded); their exit codes."""
        codes = await asyncio.gather(
            asyncio.to_thread(self.ingest.stop), asyncio.to_thread(self.consumer.stop)
        )
        return {"ingest": codes[0], "consumer": codes[1]}

    async def sigkill_consumer_mid_batch(self) -> bool:
        """SIGKILL the consumer at a moment it holds delivered, unacked entries (waited for
        up to 5 s); whether the kill left entries pending. Restarting it is the caller's."""
        await self.wait_holding(5.0)
        self.consumer.signal(signal.SIGKILL)
        await asyncio.to_thread(self.consumer.wait, 10)
        return await self.pending() > 0

    def kill_all(self) -> None:
        """Finalizer: nothing of this stack survives the test, whatever happened."""
        for child in (self.ingest, self.consumer):
            if child.alive:
                child.signal(signal.SIGTERM)
        for child in (self.ingest, self.consumer):
            # Whatever went wrong with the graceful stop, fall through to SIGKILL.
            with contextlib.suppress(Exception):
                child.wait(20) if child.proc is not None else None
            child.kill()


StackFactory = Callable[..., Stack]


@contextlib.contextmanager
def stack_factory(workdir: Path, queue: QueueTopology, postgres_url: str) -> Iterator[StackFactory]:
    """``make(backend="postgres", dsn=None, **env)``: a Stack on ``queue`` (one Redis node or a
    cluster), not started; every stack made is killed when the block ends.

    Without a DSN the postgres backend gets ``postgres_url`` (the test's fresh database).
    """
    made: list[Stack] = []

    def make(backend: str = "postgres", dsn: str | None = None, **env: str) -> Stack:
        if backend == "postgres" and dsn is None:
            dsn = postgres_url
        stack = Stack(
            workdir / f"stack{len(made)}", queue.redis_url, backend, dsn, **queue.env, **env
        )
        stack.workdir.mkdir()
        made.append(stack)
        return stack

    try:
        yield make
    finally:
        for stack in made:
            stack.kill_all()
