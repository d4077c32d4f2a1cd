"""Ingest under hostile bodies and slow clients, as a real process against real Redis.

Memory: whatever the body within the limits, the ingest process' peak RSS (VmHWM) stays
under :data:`PEAK_RSS_LIMIT_MIB`; a body whose parse would not fit one request's share of
the in-flight budget is refused with 413 naming the limit, before it is parsed. Slow
clients: a trickling upload holds only the bytes it sent, so ordinary bundles beside it are
answered as fast as without it, and the body timeout fires when the setting says.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from bench.bigbundle import bootstrap
from storage.queue import resolve
from tests.ingest.hostile_support import (
    LAYOUT,
    PEAK_RSS_LIMIT_MIB,
    TOKEN,
    IngestProcess,
    deep_arrays,
    empty_objects,
    huge_event,
    long_strings,
    post,
    small_bundle,
    wide,
    zeros,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MIB = 1024 * 1024


@pytest.fixture
async def ingest(redis_url: str, tmp_path: Path) -> AsyncIterator[IngestProcess]:
    proc = IngestProcess(redis_url, tmp_path / "ingest")
    await proc.start()
    try:
        yield proc
    finally:
        proc.stop()


async def _bundle_ids(redis_url: str) -> dict[str, int]:
    """Events per bundle id over every entry in the partition streams."""
    found: dict[str, int] = {}
    redis = Redis.from_url(redis_url)
    try:
        for stream in LAYOUT.streams():
            for _, fields in await resolve(redis.xrange(stream)):
                bundle = orjson.loads(fields[b"bundle"])
                found[bundle["bundle_id"]] = found.get(bundle["bundle_id"], 0) + len(
                    bundle["events"]
                )
    finally:
        await redis.aclose()
    return found


CASES: list[tuple[str, Callable[[], bytes], int, str]] = [
    # 10 million empty objects in one payload (~29 MiB): ~870 MiB once parsed
    ("empty-objects", lambda: empty_objects(10_000_000), 413, "LEVIATHAN_INGEST_MAX_REQUEST_BYTES"),
    ("zeros", lambda: zeros(15_000_000), 413, "LEVIATHAN_INGEST_MAX_REQUEST_BYTES"),
    ("wide", lambda: wide(2_000_000), 413, "LEVIATHAN_INGEST_MAX_REQUEST_BYTES"),
    ("wide-accepted", lambda: wide(400_000), 202, ""),
    # orjson refuses past 1,024 levels on its own, cheaply
    ("deep", lambda: deep_arrays(100_000), 400, "depth limit exceeded"),
    ("huge-event", lambda: huge_event(60 * MIB), 413, "LEVIATHAN_MAX_EVENT_BYTES"),
    ("big-event", lambda: huge_event(7 * MIB), 202, ""),
    ("long-strings", lambda: long_strings(63 * MIB, 100), 202, ""),
]


@pytest.mark.parametrize(("name", "make", "status", "named"), CASES, ids=[c[0] for c in CASES])
async def test_peak_rss_stays_bounded_whatever_the_body(
    ingest: IngestProcess,
    redis_url: str,
    name: str,
    make: Callable[[], bytes],
    status: int,
    named: str,
) -> None:
    data = make()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=110)) as session:
        got, answer, _ = await post(session, ingest.url, data)
    peak = ingest.peak_rss_mib()
    assert got == status, answer
    assert named in answer.get("detail", ""), answer
    assert peak <= PEAK_RSS_LIMIT_MIB, f"{name}: ingest peak RSS {peak:.0f} MiB"
    queued = await _bundle_ids(redis_url)
    assert bool(queued) == (status == 202), queued


async def test_concurrent_big_bundles_stay_bounded(ingest: IngestProcess, redis_url: str) -> None:
    """16 concurrent ~9 MiB bootstrap bundles: each answered 202 or 503, peak RSS bounded,
    every 202 bundle whole in the stream and nothing of a 503 one."""
    files = 28_000
    bodies = [orjson.dumps(bootstrap(files, f"repo-{i}", f"burst-{i}")) for i in range(16)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=110)) as session:
        results = await asyncio.gather(*(post(session, ingest.url, b) for b in bodies))
    peak = ingest.peak_rss_mib()
    statuses = [r[0] for r in results]
    assert set(statuses) <= {202, 503}, statuses
    assert 202 in statuses
    assert peak <= PEAK_RSS_LIMIT_MIB, f"ingest peak RSS {peak:.0f} MiB"
    queued = await _bundle_ids(redis_url)
    for i, got in enumerate(statuses):
        assert queued.get(f"burst-{i}", 0) == (files + 2 if got == 202 else 0)
    del bodies


async def _trickle(
    port: int, declared: int, interval: float, stop: asyncio.Event
) -> tuple[float | None, bytes]:
    """Send headers declaring ``declared`` bytes, then a byte every ``interval`` s until
    the server answers (or ``stop``); the seconds until the answer and its status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST /v1/events/ingest HTTP/1.1\r\nHost: ingest\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    )
    started = time.monotonic()
    writer.write(head.encode() + b"{")

    async def drip() -> None:
        while not stop.is_set():
            await asyncio.sleep(interval)
            writer.write(b" ")
            await writer.drain()

    dripping = asyncio.create_task(drip())
    answer = asyncio.create_task(reader.readline())
    stopped = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait({answer, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if answer in done:
            return time.monotonic() - started, answer.result()
        return None, b""
    finally:
        for task in (dripping, answer, stopped):
            task.cancel()
        await asyncio.gather(dripping, answer, stopped, return_exceptions=True)
        writer.close()


async def _latencies(session: aiohttp.ClientSession, url: str, prefix: str) -> list[float]:
    out = []
    for i in range(15):
        status, answer, took = await post(session, url, small_bundle(f"{prefix}-{i}"))
        assert status == 202, answer
        out.append(took)
    return out


async def test_a_trickling_50_mb_upload_does_not_slow_ordinary_bundles(
    redis_url: str, tmp_path: Path
) -> None:
    proc = IngestProcess(redis_url, tmp_path / "ingest", LEVIATHAN_BODY_TIMEOUT_SECONDS="20")
    await proc.start()
    stop = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as session:
            baseline = await _latencies(session, proc.url, "before")
            trickles = [
                asyncio.create_task(_trickle(proc.port, 50_000_000, 0.5, stop)) for _ in range(3)
            ]
            await asyncio.sleep(1.0)  # the uploads are under way
            beside = await _latencies(session, proc.url, "beside")
            async with session.get(f"{proc.base}/metrics") as resp:
                metrics = await resp.text()
            stop.set()
            answers = await asyncio.gather(*trickles)
    finally:
        proc.stop()
    assert all(took is None for took, _ in answers), answers  # still uploading meanwhile
    held = next(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("ingest_inflight_bytes ")
    )
    assert held < 1 * MIB  # three declared 50 MB uploads hold only what they sent
    usual = statistics.median(baseline)
    assert statistics.median(beside) <= 10 * usual + 0.05, (baseline, beside)
    assert max(beside) <= 10 * max(baseline) + 0.25, (baseline, beside)


async def test_the_body_timeout_fires_when_the_setting_says(redis_url: str, tmp_path: Path) -> None:
    """408 at the setting, and the connection closed with it (not after aiohttp's 10 s
    lingering read of the rest)."""
    proc = IngestProcess(redis_url, tmp_path / "ingest", LEVIATHAN_BODY_TIMEOUT_SECONDS="3")
    await proc.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        head = (
            f"POST /v1/events/ingest HTTP/1.1\r\nHost: ingest\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            "Content-Length: 50000000\r\n\r\n"
        )
        started = time.monotonic()
        writer.write(head.encode() + b"{")

        async def drip() -> None:
            for _ in range(40):
                await asyncio.sleep(0.5)
                writer.write(b" ")
                await writer.drain()

        dripping = asyncio.create_task(drip())
        status = await asyncio.wait_for(reader.readline(), 15)
        answered = time.monotonic() - started
        await asyncio.wait_for(reader.read(), 15)  # EOF: the server closed the connection
        closed = time.monotonic() - started
        dripping.cancel()
        await asyncio.gather(dripping, return_exceptions=True)
        writer.close()
    finally:
        proc.stop()
    assert status.startswith(b"HTTP/1.1 408"), status
    assert 2.5 <= answered <= 4.0, answered
    assert closed <= 4.5, closed
