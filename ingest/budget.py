"""In-flight memory budget of one ingest process.

Pipeline position: wraps ``POST /v1/events/ingest`` from the moment its body is read until
its entries are queued (XADD acknowledged). Every request reserves an estimate of the
memory its body will take while being read, inflated, parsed and encoded
(:data:`PEAK_FACTOR` times the body) and gives it back as soon as the XADD answered, so
a ``?wait=`` keeps nothing of the bundle. A request that does not fit waits for room, first
come first served, for at most ``wait`` seconds, then gets 503 with ``Retry-After``: the
original workers fail their attempt on any error status, so a short wait beats a refusal,
and a process that refuses instead of swelling is never killed by the kernel.

A reservation larger than the whole budget is clamped to it: such a request runs alone,
instead of never.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType

from webcore.errors import Unavailable

# Peak memory of a request per decompressed body byte, measured with bench/bigbundle.py
# (100,000 file.discovered events): the body, its orjson objects, one chunk of models and
# the encoded entries.
PEAK_FACTOR = 6


class Budget:
    """A byte semaphore with a bounded, first-come-first-served wait."""

    def __init__(
        self,
        total: int,
        wait: float,
        retry_after: int,
        on_change: Callable[[int], None] | None = None,
    ) -> None:
        self.total = total
        self.used = 0
        self._wait = wait
        self._retry_after = retry_after
        self._on_change = on_change
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    def reserve(self, nbytes: int) -> Grant:
        """``async with budget.reserve(n) as grant:`` — the bytes are held inside the block."""
        return Grant(self, nbytes)

    async def acquire(self, nbytes: int) -> int:
        """Take ``nbytes`` (clamped to the budget); returns the amount taken, or 503."""
        nbytes = min(max(nbytes, 0), self.total)
        if not self._waiters and self.used + nbytes <= self.total:
            self._take(nbytes)
            return nbytes
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        item = (nbytes, future)
        self._waiters.append(item)
        try:
            async with asyncio.timeout(self._wait):
                await future
        except TimeoutError:
            if future.done() and not future.cancelled():
                self.release(nbytes)  # granted as the timer fired: give it back
            raise Unavailable(
                "The ingest process is over its in-flight memory budget; retry later.",
                self._retry_after,
                reason="inflight_budget",
            ) from None
        except BaseException:  # the client went away while waiting
            if future.done() and not future.cancelled():
                self.release(nbytes)
            raise
        finally:
            if item in self._waiters:
                self._waiters.remove(item)
                self._wake()  # a large request leaving the head may let smaller ones in
        return nbytes

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
        if self._on_change is not None:
            self._on_change(self.used)
        self._wake()

    def _take(self, nbytes: int) -> None:
        self.used += nbytes
        if self._on_change is not None:
            self._on_change(self.used)

    def _wake(self) -> None:
        while self._waiters:
            nbytes, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if self.used + nbytes > self.total:
                return
            self._waiters.popleft()
            self._take(nbytes)
            future.set_result(None)


class Grant:
    """The bytes one request holds; :meth:`grow` once its real size is known."""

    __slots__ = ("_budget", "_want", "held")

    def __init__(self, budget: Budget, nbytes: int) -> None:
        self._budget = budget
        self._want = nbytes
        self.held = 0

    async def __aenter__(self) -> Grant:
        self.held = await self._budget.acquire(self._want)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def grow(self, nbytes: int) -> None:
        """Hold at least ``nbytes`` (clamped to the budget), waiting for the difference."""
        nbytes = min(nbytes, self._budget.total)
        if nbytes > self.held:
            self.held += await self._budget.acquire(nbytes - self.held)

    def release(self) -> None:
        if self.held:
            held, self.held = self.held, 0
            self._budget.release(held)
