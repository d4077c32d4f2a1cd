"""End-to-end latency of the pipeline at half its maximum sustained load.

Pipeline position: drives the real ``python -m ingest`` and ``python -m consumer`` processes
(NDJSON backend in a temp dir, real Redis) from outside, as workers do. Run
``python -m bench.consumer_e2e [--burst N] [--seconds S]`` (or ``python -m bench.consumer
--e2e`` after the drain benchmark). Phase 1 posts a burst of 20-event bundles without
waiting and times until the consumer group's backlog is empty: the max sustained rate.
Phase 2 posts at half that rate with ``?wait=`` and prints p50/p99 of request → 200
(persisted and announced), i.e. an upper bound of "ingest 202 → commit announced".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.streams import EVENTS_PER_BUNDLE, backlog, bundle
from leviathan_cp.ports import free_port
from storage.queue import StreamLayout

TOKEN = "bench-token-0123456789abcdef"
P99_TARGET_MS = 250


def _start(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", module], env=env, stdout=out, stderr=out)


async def _ready(url: str) -> None:
    for _ in range(300):
        try:
            async with aiohttp.ClientSession() as s, s.get(url) as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit(f"{url} never became ready")


async def _post(session: aiohttp.ClientSession, url: str, raw: dict[str, Any]) -> int:
    for _ in range(50):
        async with session.post(url, json=raw) as resp:
            if resp.status != 503:
                return resp.status
        await asyncio.sleep(0.1)  # backpressure: honour it, as a worker would
    return 503


async def _phases(api: str, redis: Redis, layout: StreamLayout, burst: int, seconds: float) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    run = uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession(headers=headers) as session:
        sem = asyncio.Semaphore(64)

        async def fire(n: int) -> int:
            async with sem:
                raw = bundle(n, run).model_dump(mode="json")
                return await _post(session, f"{api}/v1/events/ingest", raw)

        started = time.perf_counter()
        statuses = await asyncio.gather(*(fire(n) for n in range(burst)))
        while True:  # drained when the group has nothing pending or undelivered
            if not await backlog(redis, layout):
                break
            await asyncio.sleep(0.02)
        rate = burst / (time.perf_counter() - started)
        print(
            f"e2e max sustained: {rate * EVENTS_PER_BUNDLE:,.0f} events/s "
            f"({rate:,.0f} bundles/s; statuses {sorted(set(statuses))})"
        )

        target = rate / 2
        latencies: list[float] = []

        async def timed(n: int) -> None:
            raw = bundle(n, run).model_dump(mode="json")
            t0 = time.perf_counter()
            async with session.post(f"{api}/v1/events/ingest?wait=10", json=raw) as resp:
                await resp.read()
                if resp.status == 200:
                    latencies.append(time.perf_counter() - t0)

        tasks = []
        t_start = time.perf_counter()
        for i in range(int(target * seconds)):
            delay = t_start + i / target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(timed(burst + i)))
        await asyncio.gather(*tasks)
    latencies.sort()
    if not latencies:
        raise SystemExit("no ?wait= request returned 200")
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"e2e at {target * EVENTS_PER_BUNDLE:,.0f} events/s ({len(latencies)}/{len(tasks)} "
        f"answered 200): p50 {p50 * 1000:.1f} ms  p99 {p99 * 1000:.1f} ms  "
        f"(target p99 <= {P99_TARGET_MS} ms)"
    )


async def run(redis_url: str, burst: int = 2000, seconds: float = 5.0) -> None:
    prefix = f"bench:e2e:{uuid.uuid4().hex[:8]}"
    layout = StreamLayout(prefix=prefix, partitions=8)
    api_port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIATHAN_", "POSTGRES_"))}
        env.update(
            LEVIATHAN_REDIS_URL=redis_url,
            LEVIATHAN_STREAM_PREFIX=prefix,
            LEVIATHAN_BACKEND="ndjson",
            LEVIATHAN_NDJSON_DIR=tmp,
            HOSTNAME="bench",
            LEVIATHAN_CONTROL_PLANE_TOKEN=TOKEN,
            LEVIATHAN_API_HOST="127.0.0.1",
            LEVIATHAN_API_PORT=str(api_port),
            LEVIATHAN_CONSUMER_PORT=str(free_port()),
            LEVIATHAN_CONSUMER_HOST="127.0.0.1",
        )
        procs = [_start(m, env, Path(tmp) / f"{m}.log") for m in ("ingest", "consumer")]
        redis = Redis.from_url(redis_url)
        try:
            await _ready(f"http://127.0.0.1:{api_port}/readyz")
            await _ready(f"http://127.0.0.1:{env['LEVIATHAN_CONSUMER_PORT']}/readyz")
            await _phases(f"http://127.0.0.1:{api_port}", redis, layout, burst, seconds)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(30)
            keys = [k async for k in redis.scan_iter(match=f"{prefix}*", count=5000)]
            for start in range(0, len(keys), 1000):
                await redis.delete(*keys[start : start + 1000])
            await redis.aclose()


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--burst", type=int, default=2000, help="bundles of the max-rate phase")
    p.add_argument("--seconds", type=float, default=5.0, help="length of the half-rate phase")
    p.add_argument(
        "--redis-url",
        default=os.environ.get("LEVIATHAN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/4"),
    )
    args = p.parse_args()
    if args.burst < 1 or args.seconds <= 0:
        p.error("--burst must be at least 1 and --seconds above 0")
    asyncio.run(run(args.redis_url, args.burst, args.seconds))


if __name__ == "__main__":
    cli()
