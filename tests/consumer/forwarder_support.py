"""A scriptable Spider stand-in (an aiohttp server on 127.0.0.1) and forwarder helpers.

The sink is down (connection refused) until :meth:`SpiderSink.start`; then it answers each
request with the next step of its script (``"503"``, ``"401"``, ``"slow"``: an answer
later than the forwarder's timeout, ...) and, once the script is used up, 200 — except for
bundles named in ``refuse``, answered 422 with a body naming the bundle.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from redis.asyncio import Redis

from consumer.forwarder.forward import Forwarder
from consumer.forwarder.http import ENTRY_HEADER
from consumer.forwarder.metrics import SpiderMetrics
from consumer.forwarder.settings import SpiderSettings
from leviathan_cp.ports import free_port
from storage.queue import StreamLayout, resolve
from tests.consumer.process_support import wait_for


@dataclass
class Received:
    partition: int
    entry_id: str
    bundle: dict[str, Any]
    raw: bytes
    headers: dict[str, str]


@dataclass
class SpiderSink:
    port: int = field(default_factory=free_port)
    script: list[str] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    slow_s: float = 2.0
    hanging: bool = False
    """Every request answers only after ``slow_s`` (and is not accepted) while set."""
    accepted: list[Received] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        step = self.script.pop(0) if self.script else "ok"
        if self.hanging:
            step = "slow"
        self.answers.append(step)
        if step == "slow":
            await asyncio.sleep(self.slow_s)  # the forwarder gave up long ago: not accepted
            return web.Response(status=200)
        if step != "ok":
            return web.Response(status=int(step), text=f"sink says {step}")
        bundle = orjson.loads(raw)
        if bundle["bundle_id"] in self.refuse:
            self.answers[-1] = "422"
            return web.json_response(
                {"detail": f"bundle {bundle['bundle_id']} rejected: unknown event type"},
                status=422,
            )
        partition, _, entry_id = request.headers[ENTRY_HEADER].partition(":")
        self.accepted.append(Received(int(partition), entry_id, bundle, raw, dict(request.headers)))
        return web.json_response({"status": "accepted"}, status=202)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/events/ingest", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def by_partition(self) -> dict[int, list[str]]:
        out: dict[int, list[str]] = defaultdict(list)
        for r in self.accepted:
            out[r.partition].append(r.entry_id)
        return out


def id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def assert_in_order(ids: list[str]) -> None:
    """Stream order, a re-delivery allowed only right after itself (at least once)."""
    deduped = [x for i, x in enumerate(ids) if i == 0 or ids[i - 1] != x]
    keys = [id_key(x) for x in deduped]
    assert keys == sorted(keys), f"out of order: {deduped}"
    assert len(set(deduped)) == len(deduped), f"sent again after a later one: {deduped}"


def spider_settings(url: str, **overrides: Any) -> SpiderSettings:
    values: dict[str, Any] = {
        "spider_enabled": True,
        "spider_url": url,
        "spider_timeout_s": 0.3,
        "spider_retry_min_s": 0.02,
        "spider_retry_max_s": 0.1,
        "spider_block_ms": 50,
        "spider_batch": 10,
    }
    values.update(overrides)
    return SpiderSettings(**values)


def forwarder(
    redis: Redis, layout: StreamLayout, settings: SpiderSettings, name: str = "f1"
) -> Forwarder:
    return Forwarder(redis, layout, settings, name, SpiderMetrics())


async def stream_ids(redis: Redis, layout: StreamLayout) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for p in range(layout.partitions):
        rows = await resolve(redis.xrange(layout.stream(p)))
        out[p] = [i.decode() for i, _ in rows]
    return out


def metric(fwd: Forwarder, name: str, **labels: str) -> float:
    value = fwd.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """``wait_for`` for a condition that needs no I/O."""

    async def check() -> bool:
        return condition()

    await wait_for(check, seconds, what, interval=0.02)
