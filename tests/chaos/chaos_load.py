"""The continuous load of a chaos scenario: a client that remembers every answer it got.

Pipeline position: the workers' side of ``POST /v1/events/ingest``. A few simulated workers
post realistic bundles (:class:`leviathan_cp.loadgen_bundles.BundleMaker`: attempt
lifecycles with artifacts and PRs, single-event posts reusing ``bundle-{attempt_id}``), and
an optional burst worker posts big ``file.discovered`` bundles. Every request has a
timeout; every answer is recorded with its start/end time, status and ``Retry-After``.

Like a real worker, a client that got a 503 or 504 or could not connect posts the *same* body
again (after ``Retry-After``, capped), so retries put duplicate event ids on the wire and the
storage's idempotency is exercised too. An event counts as accepted once any post of it got
a 2xx; ``sent_ids`` holds every event id that ever left the client, so storage can be
checked for events nobody sent.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from leviathan_cp.loadgen_bundles import BundleMaker
from tests.chaos.chaos_stack import TOKEN, Stack

RETRY_CAP_S = 1.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: monotonic start/end, status (HTTP code or a connection-level name)."""

    started: float
    ended: float
    status: str
    retry_after: str | None
    events: int
    burst: bool

    def in_flight_at(self, moment: float) -> bool:
        return self.started <= moment <= self.ended


def _classify(exc: BaseException) -> str:
    # Order matters: ClientConnectorError is an OSError subclass of ClientOSError.
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "refused"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return "disconnected"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return f"error:{type(exc).__name__}"


@dataclass
class LoadClient:
    """Posts until :meth:`stop`; use as ``async with LoadClient(url, ...) as load``."""

    url: str
    run_id: str
    workers: int = 4
    pause_s: float = 0.04
    burst_events: int = 0
    burst_pause_s: float = 1.0
    timeout_s: float = 10.0
    seed: int = 1
    sent_ids: set[str] = field(default_factory=set)
    accepted_ids: set[str] = field(default_factory=set)
    outcomes: list[Outcome] = field(default_factory=list)
    bursts_in_flight: int = 0
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LoadClient:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
        )
        target = f"chaos-{self.run_id}"
        for i in range(self.workers):
            maker = BundleMaker(self.run_id, i, 0, random.Random(self.seed * 1000 + i), target)
            self._tasks.append(asyncio.create_task(self._worker(maker)))
        if self.burst_events:
            self._tasks.append(asyncio.create_task(self._bursts(target)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop posting; in-flight requests finish (each is bounded by its timeout)."""
        self._stopping.set()
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*self._tasks), self.timeout_s + 5)
            self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def pace(self, seconds: float) -> None:
        """Let the load run for ``seconds`` (fails fast if a worker crashed)."""
        done, _ = await asyncio.wait(self._tasks, timeout=seconds)
        for task in done:
            task.result()

    # -- posting -----------------------------------------------------------------------
    async def _post(self, body: dict[str, Any], burst: bool) -> Outcome:
        assert self._session is not None
        data = orjson.dumps(body)
        self.sent_ids.update(ev["event_id"] for ev in body["events"])
        started = time.monotonic()
        retry_after = None
        self.bursts_in_flight += burst
        try:
            async with self._session.post(
                f"{self.url}/v1/events/ingest",
                data=data,
                headers={"Content-Type": "application/json"},
            ) as resp:
                await resp.read()
                status, retry_after = str(resp.status), resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = _classify(exc)
        finally:
            self.bursts_in_flight -= burst
        outcome = Outcome(
            started, time.monotonic(), status, retry_after, len(body["events"]), burst
        )
        self.outcomes.append(outcome)
        if status in ("200", "202"):
            self.accepted_ids.update(ev["event_id"] for ev in body["events"])
        return outcome

    async def _deliver(self, body: dict[str, Any], burst: bool = False) -> None:
        """Post ``body`` until a final answer; retry 503, 504 and connection failures."""
        while True:
            outcome = await self._post(body, burst)
            if outcome.status in ("503", "504"):
                delay = min(float(outcome.retry_after or 1), RETRY_CAP_S)
            elif outcome.status in ("refused", "disconnected"):
                delay = 0.2
            else:
                return
            if self._stopping.is_set():
                return
            await asyncio.sleep(delay)

    async def _worker(self, maker: BundleMaker) -> None:
        while not self._stopping.is_set():
            for body in maker.next(0.0):
                await self._deliver(body)
            await asyncio.sleep(self.pause_s)

    async def _bursts(self, target: str) -> None:
        n = 0
        while not self._stopping.is_set():
            n += 1
            attempt = f"{self.run_id}-burst{n}"
            events = [
                {
                    "event_id": f"{attempt}-f{i}",
                    "event_type": "file.discovered",
                    "timestamp": "2026-11-28T09:00:05Z",
                    "payload": {"target_id": target, "path": f"src/m{i}.py", "size_bytes": i},
                }
                for i in range(self.burst_events)
            ]
            await self._deliver(
                {"target": target, "bundle_id": f"bootstrap-{attempt}", "events": events}, True
            )
            await asyncio.sleep(self.burst_pause_s)

    # -- what was seen -----------------------------------------------------------------
    def statuses(self, start: float = 0.0, end: float = float("inf")) -> Counter[str]:
        """Answers of requests that ended in [start, end]."""
        return Counter(o.status for o in self.outcomes if start <= o.ended <= end)

    def summary(self) -> dict[str, Any]:
        latencies = sorted(o.ended - o.started for o in self.outcomes)
        p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else 0.0
        return {
            "requests": len(self.outcomes),
            "statuses": dict(sorted(self.statuses().items())),
            "accepted_events": len(self.accepted_ids),
            "sent_events": len(self.sent_ids),
            "p99_ms": round(p99 * 1e3, 1),
            "max_ms": round((latencies[-1] if latencies else 0.0) * 1e3, 1),
        }


async def consumer_kills_under_load(
    stack: Stack, kills: int, before: Callable[[], float], after: Callable[[], float]
) -> tuple[LoadClient, int]:
    """Start ``stack``, then SIGKILL its consumer ``kills`` times while workers and bursts of
    1,000 events keep posting, each kill ``before()`` s into the load and aimed at a moment
    the consumer holds a batch in flight, its restart ``after()`` s later. The load client
    (to audit) and how many kills left delivered, unacked entries behind."""
    await stack.start()
    kills_with_pending = 0
    async with LoadClient(
        stack.url, uuid.uuid4().hex[:6], workers=3, burst_events=1000, burst_pause_s=0.2
    ) as load:
        await load.pace(1.0)
        for _ in range(kills):
            await load.pace(before())
            kills_with_pending += await stack.sigkill_consumer_mid_batch()
            await load.pace(after())  # workers keep posting meanwhile
            await stack.start_consumer()
        await load.pace(1.0)
    return load, kills_with_pending
