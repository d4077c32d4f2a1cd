"""``?wait=`` support: futures resolved by consumers' commit announcements (DESIGN §2).

Pipeline position: after the XADD, a handler with ``?wait=`` registers the entry here and
waits. ONE pub/sub subscription per process (started in the app's cleanup_ctx) reads the
consumers' messages on ``layout.committed_channel`` — comma-separated
``committed_token(partition, entry_id)`` tokens — and resolves matching futures. Because a
consumer may commit before the waiter is registered, :meth:`wait` checks the
``committed_key`` marker once after registering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from storage.queue import StreamLayout, committed_token, resolve

log = logging.getLogger(__name__)


class Waiters:
    def __init__(self, redis: Redis, layout: StreamLayout) -> None:
        self._redis = redis
        self._layout = layout
        self._futures: dict[str, list[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="ingest-commit-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._layout.committed_channel)
                    while True:
                        # A short poll, not listen(): an idle subscription must not trip
                        # the client's socket timeout.
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None:
                            self._resolve(message.get("data"))
            except (RedisError, OSError) as exc:
                log.warning("commit listener lost Redis (%s); resubscribing", type(exc).__name__)
                await asyncio.sleep(1.0)

    def _resolve(self, data: object) -> None:
        if isinstance(data, bytes):
            data = data.decode("utf-8", errors="replace")
        if not isinstance(data, str):
            return
        for token in data.split(","):
            for future in self._futures.pop(token.strip(), []):
                if not future.done():
                    future.set_result(None)

    async def wait(self, partition: int, entry_id: str, seconds: float) -> bool:
        """True once the entry is committed, False after ``seconds``."""
        token = committed_token(partition, entry_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures.setdefault(token, []).append(future)
        try:
            with contextlib.suppress(RedisError, OSError):
                key = self._layout.committed_key(partition, entry_id)
                if await resolve(self._redis.exists(key)):
                    return True
            await asyncio.wait_for(future, seconds)
            return True
        except TimeoutError:
            return False
        finally:
            waiting = self._futures.get(token)
            if waiting is not None and future in waiting:
                waiting.remove(future)
                if not waiting:
                    del self._futures[token]
