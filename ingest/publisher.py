"""Group-commit publisher: many requests' XADDs in one Redis pipeline (DESIGN §3).

Pipeline position: the handler hands a validated envelope to :meth:`Publisher.publish`
and awaits its own future; one background task drains everything pending into ONE
non-transactional pipeline (up to ``max_batch`` commands), then resolves each future with
its entry id or the error. Under load this turns N round trips into a few; at low load a
request pays one round trip as before. A publisher that is not running answers
:class:`Unavailable` at once instead of letting requests hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from ingest.errors import Unavailable

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    stream: str
    fields: dict[bytes, bytes]
    future: asyncio.Future[str]


class Publisher:
    """Owns the drain task; ``on_batch`` observes each pipeline's size (metrics)."""

    def __init__(
        self,
        redis: Redis,
        *,
        max_batch: int,
        timeout: float,
        retry_after: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._redis = redis
        self._max_batch = max_batch
        self._timeout = timeout
        self._retry_after = retry_after
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-publisher")

    async def stop(self) -> None:
        """Finish what is queued, then stop the drain task."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def publish(self, stream: str, fields: dict[bytes, bytes]) -> str:
        """XADD ``fields`` to ``stream`` with the next pipeline; returns the entry id."""
        if not self.running:
            raise Unavailable("The queue publisher is not running.", self._retry_after)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(stream, fields, future))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._timeout)
        except TimeoutError:
            raise Unavailable(
                "The queue did not acknowledge the bundle in time.", self._retry_after
            ) from None

    def _take_batch(self, first: _Pending) -> list[_Pending]:
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = self._take_batch(await self._queue.get())
            try:
                await self._send(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _send(self, batch: list[_Pending]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for item in batch:
                    pipe.xadd(item.stream, item.fields)  # type: ignore[arg-type]
                results = await asyncio.wait_for(pipe.execute(raise_on_error=False), self._timeout)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("XADD pipeline of %d failed: %s", len(batch), type(exc).__name__)
            for item in batch:
                _fail(item.future, self._retry_after)
            return
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, Exception):
                log.warning("XADD to %s failed: %s", item.stream, result)
                _fail(item.future, self._retry_after)
            else:
                entry = result.decode() if isinstance(result, bytes) else str(result)
                item.future.set_result(entry)


def _fail(future: asyncio.Future[str], retry_after: int) -> None:
    if not future.done():
        future.set_exception(Unavailable("The queue is unreachable.", retry_after))
