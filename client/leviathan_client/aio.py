"""``AsyncClient``: :class:`~leviathan_client.client.Client` with coroutine methods.

Pipeline position: the same sender thread, spool and retries as ``Client``; only the
calls that may block (an fsync to the spool, a full queue, waiting for answers, a
synchronous post) run in the default executor, so the event loop never waits on them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType

from leviathan_client.client import DEFAULT_MAX_QUEUE, DEFAULT_MAX_SPOOL_BYTES, Client, Stats
from leviathan_client.encode import GZIP_THRESHOLD, MAX_BODY_BYTES, MAX_EVENTS, BundleLike
from leviathan_client.retry import Backoff
from leviathan_client.transport import Answer


class AsyncClient:
    """Same arguments and methods as :class:`Client`, as coroutines."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        spool_dir: str | Path | None = None,
        gzip: bool = True,
        timeout: float = 30.0,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES,
        gzip_threshold: int = GZIP_THRESHOLD,
        max_events: int = MAX_EVENTS,
        max_body_bytes: int = MAX_BODY_BYTES,
        backoff: Backoff | None = None,
        adopt_interval: float = 30.0,
    ) -> None:
        # adopting a spool reads the folder: cheap, and done once, before the loop needs it
        self._client = Client(
            url,
            token,
            spool_dir=spool_dir,
            gzip=gzip,
            timeout=timeout,
            max_queue=max_queue,
            max_spool_bytes=max_spool_bytes,
            gzip_threshold=gzip_threshold,
            max_events=max_events,
            max_body_bytes=max_body_bytes,
            backoff=backoff,
            adopt_interval=adopt_interval,
        )

    @property
    def stats(self) -> Stats:
        return self._client.stats

    async def send(self, bundle: BundleLike) -> None:
        await asyncio.to_thread(self._client.send, bundle)

    # the same timeout arguments as Client's (ASYNC109 would have callers wrap them instead)
    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        return await asyncio.to_thread(self._client.flush, timeout)

    async def close(self, timeout: float | None = 10.0) -> bool:  # noqa: ASYNC109
        return await asyncio.to_thread(self._client.close, timeout)

    async def post(
        self, bundle: BundleLike, wait: float | None = None, deadline: float = 60.0
    ) -> Answer:
        return await asyncio.to_thread(self._client.post, bundle, wait, deadline)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
