"""In-flight memory budget of one ingest process.

Pipeline position: wraps ``POST /v1/events/ingest`` from the moment its body is read until
its entries are queued (XADD acknowledged). A request holds nothing until its bytes arrive:
its grant grows with every chunk read (twice the bytes: the chunks and their join), then,
before JSON parsing, to the estimate of :mod:`ingest.cost` (what parsing, validating and
encoding that body really takes), and is given back as soon as the XADD answered, so a
``?wait=`` keeps nothing of the bundle. A declared ``Content-Length`` reserves nothing, so
a client trickling a large body holds only what it has sent. One request may hold at most
its share (``LEVIATHAN_INGEST_MAX_REQUEST_BYTES``, never more than the whole budget): a
body estimated above it is refused with 413 before it is parsed (:mod:`ingest.body`).

A grant that does not fit waits for room, first come first served, for at most ``wait``
seconds, then the request gets 503 with ``Retry-After``: the original workers fail their
attempt on any error status, so a short wait beats a refusal, and a process that refuses
instead of swelling is never killed by the kernel.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from webcore.errors import Unavailable

# Bytes held per body byte while it is read: the chunks, then their join.
READ_FACTOR = 2


class _Yield(Exception):
    """Set on a waiter whose held bytes block an older waiter that can never fit otherwise."""


@dataclass(eq=False, slots=True)
class _Waiter:
    nbytes: int  # what it waits for, on top of ...
    held: int  # ... what its request already holds
    future: asyncio.Future[None]


class Budget:
    """A byte semaphore with a bounded, first-come-first-served wait.

    Requests hold bytes while they wait for more (a body half read, then its parse), so
    waiters can block each other: sixteen big bundles read at once may each hold a part of
    the budget that the oldest one needs. When the bytes held by waiters alone leave the
    oldest waiter no room, the newest waiter that holds bytes gives up at once (503) and
    releases them, until the oldest fits; without that every one of them waited its full
    ``wait`` and got 503.
    """

    def __init__(
        self,
        total: int,
        wait: float,
        retry_after: int,
    ) -> None:
        self.total = total
        self.used = 0
        self._wait = wait
        self._retry_after = retry_after
        self._waiters: deque[_Waiter] = deque()

    def reserve(self, nbytes: int = 0) -> Grant:
        """``async with budget.reserve(n) as grant:`` — the bytes are held inside the block.

        A grant of no bytes holds nothing until it grows, so a caller may skip the ``async
        with`` and :meth:`Grant.release` it in a ``finally`` instead (the ingest handler).
        """
        return Grant(self, nbytes)

    async def acquire(self, nbytes: int, held: int = 0) -> int:
        """Take ``nbytes`` (clamped to the budget) on top of the ``held`` bytes the caller
        already has; returns the amount taken, or 503."""
        nbytes = min(max(nbytes, 0), self.total - min(held, self.total))
        if nbytes == 0:
            return 0
        if not self._waiters and self.used + nbytes <= self.total:
            self._take(nbytes)
            return nbytes
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(nbytes, held, future)
        self._waiters.append(waiter)
        self._unblock()
        try:
            async with asyncio.timeout(self._wait):
                await future
        except (TimeoutError, _Yield):
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(nbytes)  # granted as the timer fired: give it back
            raise Unavailable(
                "The ingest process is over its in-flight memory budget; retry later.",
                self._retry_after,
                reason="inflight_budget",
            ) from None
        except BaseException:  # the client went away while waiting
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(nbytes)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                self._wake()  # a large request leaving the head may let smaller ones in
        return nbytes

    def release(self, nbytes: int) -> None:
        self.used -= nbytes
        self._wake()

    def _take(self, nbytes: int) -> None:
        self.used += nbytes

    def _wake(self) -> None:
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():
                self._waiters.popleft()
                continue
            if self.used + head.nbytes > self.total:
                self._unblock()
                return
            self._waiters.popleft()
            self._take(head.nbytes)
            head.future.set_result(None)

    def _unblock(self) -> None:
        """Make the newest waiter holding bytes yield when waiters' bytes alone block the
        oldest (one at a time: its release wakes the queue and checks again)."""
        live = [w for w in self._waiters if not w.future.done()]
        if len(live) < 2:
            return
        head = live[0]
        if sum(w.held for w in live) + head.nbytes <= self.total:
            return  # requests that are not waiting will give back enough
        for waiter in reversed(live[1:]):
            if waiter.held:
                waiter.future.set_exception(_Yield())
                return


class Grant:
    """The bytes one request holds; :meth:`grow` as its bytes arrive and before parsing."""

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
            self.held += await self._budget.acquire(nbytes - self.held, self.held)

    def try_grow(self, nbytes: int) -> bool:
        """:meth:`grow` when it would not wait (nobody waits and the bytes fit), else False
        and nothing taken: the usual request skips a coroutine per step."""
        budget = self._budget
        nbytes = min(nbytes, budget.total)
        more = nbytes - self.held
        if more <= 0:
            return True
        if budget._waiters or budget.used + more > budget.total:
            return False
        budget.used += more
        self.held = nbytes
        return True

    def release(self) -> None:
        if self.held:
            held, self.held = self.held, 0
            self._budget.release(held)
