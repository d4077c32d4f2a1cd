"""Spider forwarder: its send rate, and what running it inside a consumer costs the writers.

Pipeline position: measures :class:`consumer.forwarder.Forwarder` against a Spider stand-in
(an aiohttp server answering 202, run as a child process so it does not share our CPU
time slice), without ingest. ``python -m bench.forwarder [--bundles N]`` pre-fills N
20-event bundles and then, ``--rounds`` times, alternately:

- ``writers``: one consumer :class:`~consumer.reader.Reader` drains them into NDJSON;
- ``writers+fwd``: the same drain with a forwarder running in the same process and event
  loop (``LEVIATHAN_SPIDER_ENABLED=true``), timed until the writers are done;

then reports the writers' events/s of both and their ratio, and the forwarder's bundles/s
(one POST in flight per partition). Uses its own stream prefix and deletes its keys.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiohttp import web
from redis.asyncio import Redis

from bench.streams import EVENTS_PER_BUNDLE, backlog, prefill
from consumer.forwarder.forward import Forwarder
from consumer.forwarder.metrics import SpiderMetrics
from consumer.forwarder.settings import SpiderSettings
from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader
from consumer.settings import ConsumerSettings
from leviathan_cp.ports import free_port
from storage.config import create_store
from storage.queue import StreamLayout


def serve_sink(port: int) -> None:
    """The Spider stand-in: read the body, answer 202."""

    async def ingest(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "accepted"}, status=202)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/events/ingest", ingest)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


async def spider_backlog(redis: Redis, layout: StreamLayout) -> int:
    total = 0
    for stream in layout.streams():
        for row in await redis.xinfo_groups(stream):
            if row["name"] == b"spider":
                total += int(row["pending"]) + int(row.get("lag") or 0)
    return total


async def until_zero(redis: Redis, layout: StreamLayout, spider: bool) -> None:
    while await (spider_backlog(redis, layout) if spider else backlog(redis, layout)):  # noqa: ASYNC110 (polling Redis)
        await asyncio.sleep(0.02)


async def drain(
    settings: ConsumerSettings, spider: SpiderSettings | None, bundles: int
) -> tuple[float, float]:
    """(writers' seconds, forwarder's seconds or 0) for ``bundles`` pre-filled bundles."""
    redis = Redis.from_url(settings.redis_url)
    layout = settings.layout
    store = create_store(settings, writer=True)
    fwd = None
    try:
        if spider is not None:
            fwd = Forwarder(redis, layout, spider, "bench", SpiderMetrics())
            for p in range(layout.partitions):  # the group must see the whole prefill
                await fwd.part(p).ensure_group("earliest")
        await prefill(redis, layout, bundles, uuid.uuid4().hex[:6])
        await store.open()
        reader = Reader(redis, store, settings, ConsumerMetrics())
        started = time.perf_counter()
        tasks = [asyncio.create_task(reader.run())]
        if fwd is not None:
            tasks.append(asyncio.create_task(fwd.run()))
        await until_zero(redis, layout, spider=False)
        writers = time.perf_counter() - started
        forwarded = 0.0
        if fwd is not None:
            await until_zero(redis, layout, spider=True)
            forwarded = time.perf_counter() - started
            fwd.stop()
        reader.stop()
        await asyncio.gather(*tasks)
        return writers, forwarded
    finally:
        await store.close()
        keys = [*layout.streams(), *layout.dead_streams(), layout.committed_channel]
        keys += [layout.spider_dead(p) for p in range(layout.partitions)]
        keys += [layout.spider_lease(p) for p in range(layout.partitions)]
        await redis.delete(*keys)
        async for key in redis.scan_iter(match=f"{layout.prefix}:done:*", count=5000):
            await redis.delete(key)
        await redis.aclose()


async def main(args: argparse.Namespace, sink_url: str) -> None:
    prefix = f"bench:forwarder:{uuid.uuid4().hex[:8]}"
    spider = SpiderSettings(spider_enabled=True, spider_url=sink_url, spider_block_ms=20)
    total = args.bundles * EVENTS_PER_BUNDLE
    print(f"{args.bundles} bundles x {EVENTS_PER_BUNDLE} events, {args.partitions} partitions")
    alone: list[float] = []
    beside: list[float] = []
    sends: list[float] = []
    for round_ in range(1, args.rounds + 1):
        for with_fwd in (False, True):  # alternate: a shared host's slow spell hits both
            with tempfile.TemporaryDirectory() as tmp:
                settings = ConsumerSettings(
                    redis_url=args.redis_url,
                    stream_prefix=prefix,
                    partitions=args.partitions,
                    block_ms=20,
                    consumer_name="bench",
                    backend="ndjson",
                    ndjson_dir=Path(tmp),
                )
                writers, forwarded = await drain(
                    settings, spider if with_fwd else None, args.bundles
                )
            (beside if with_fwd else alone).append(total / writers)
            label = "writers+fwd" if with_fwd else "writers"
            line = f"round {round_} {label:12} writers {total / writers:,.0f} events/s"
            if with_fwd:
                sends.append(args.bundles / forwarded)
                rate = args.bundles / forwarded
                line += f"; all forwarded after {forwarded:.2f}s ({rate:,.0f} bundles/s)"
            print(line)
    a, b = statistics.median(alone), statistics.median(beside)
    print(f"writers alone:            median {a:,.0f} events/s")
    print(f"writers beside forwarder: median {b:,.0f} events/s  (ratio {b / a:.2f})")
    print(f"forwarder:                median {statistics.median(sends):,.0f} bundles/s")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundles", type=int, default=3000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--redis-url",
        default=os.environ.get("LEVIATHAN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/4"),
    )
    p.add_argument("--serve-sink", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve_sink:
        serve_sink(args.serve_sink)
        return
    for name in ("bundles", "partitions", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    port = free_port()
    sink = subprocess.Popen([sys.executable, "-m", "bench.forwarder", "--serve-sink", str(port)])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        asyncio.run(main(args, f"http://127.0.0.1:{port}"))
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    cli()
