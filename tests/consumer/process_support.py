"""Helpers to run the real ``python -m consumer`` process in integration and e2e tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from consumer.settings import ConsumerSettings
from leviathan_cp.ports import free_port
from storage.envelope import encode
from storage.lag import lag_of
from storage.queue import GROUP, StreamLayout, resolve
from storage.schema import Bundle
from tests import factories as f

ROOT = Path(__file__).resolve().parents[2]


def consumer_env(settings: ConsumerSettings, redis_url: str, **extra: str) -> dict[str, str]:
    """Environment for a consumer process equivalent to ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIATHAN_", "POSTGRES_"))}
    env.update(
        {
            "LEVIATHAN_REDIS_URL": redis_url,
            "LEVIATHAN_BACKEND": settings.backend,
            "LEVIATHAN_NDJSON_DIR": str(settings.ndjson_dir),
            "LEVIATHAN_PARTITIONS": str(settings.partitions),
            "HOSTNAME": settings.consumer_name,
            "LEVIATHAN_CONSUMER_PORT": str(free_port()),
            "LEVIATHAN_CONSUMER_HOST": "127.0.0.1",
            "LEVIATHAN_CONSUMER_BATCH": str(settings.batch),
            "LEVIATHAN_CONSUMER_BLOCK_MS": "100",
            "LEVIATHAN_CONSUMER_MAX_DELIVERIES": str(settings.max_deliveries),
            "LEVIATHAN_CONSUMER_LEASE_S": str(settings.lease_s),
        }
    )
    if settings.postgres_dsn is not None:
        env["POSTGRES_DSN"] = settings.postgres_dsn.get_secret_value()
    env.update(extra)
    return env


def start_consumer(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer"], cwd=ROOT, env=env, stdout=out, stderr=out
        )


def refusal_line(tier: str, env: dict[str, str]) -> str:
    """Run ``python -m TIER`` with ``env``, expecting it to refuse to start: exit 1, no
    traceback, exactly one line ``TIER: …`` on stderr, which is returned."""
    proc = subprocess.run(
        [sys.executable, "-m", tier],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(f"{tier}: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def bundles(n: int, prefix: str = "att") -> list[dict[str, Any]]:
    return [f.attempt_lifecycle(f"{prefix}-{i}", f"task-{i}") for i in range(n)]


def event_ids(raws: list[dict[str, Any]]) -> set[str]:
    return {e["event_id"] for raw in raws for e in raw["events"]}


async def prefill(redis: Redis, layout: StreamLayout, raws: list[dict[str, Any]]) -> None:
    """XADD bundles to their partitions in pipelines, as ingest's group commit does."""
    async with redis.pipeline(transaction=False) as pipe:
        for raw in raws:
            bundle = Bundle.model_validate(raw)
            stream = layout.stream(layout.partition_of(bundle.bundle_id))
            pipe.xadd(stream, encode(bundle, "test"))  # type: ignore[arg-type]
        await pipe.execute()


async def backlog(redis: Redis, layout: StreamLayout) -> int:
    """Entries not yet acked by group ``writers``: pending plus undelivered.

    Before the consumer created its group every entry of a stream counts as backlog.
    """
    total = 0
    for stream in layout.streams():
        try:
            rows = await resolve(redis.xinfo_groups(stream))
        except ResponseError:  # no such stream yet
            continue
        group = [r for r in rows if r["name"] in (GROUP, GROUP.encode())]
        if not group:
            total += int(await resolve(redis.xlen(stream)))
            continue
        # XINFO's lag counter can lie (storage.lag): checked against the stream itself
        total += int(group[0]["pending"]) + await lag_of(redis, stream, group[0])
    return total


async def backlog_detail(redis: Redis, layout: StreamLayout) -> str:
    """Each stream's group row, length and last entry: what a stuck backlog looks like."""
    lines = []
    for stream in layout.streams():
        try:
            rows = await resolve(redis.xinfo_groups(stream))
        except ResponseError as exc:
            lines.append(f"{stream}: {exc}")
            continue
        last = await resolve(redis.xrevrange(stream, count=1))
        length = await resolve(redis.xlen(stream))
        lines.append(f"{stream}: xlen {length}, last {last[0][0] if last else None!r}, {rows}")
    return "\n".join(lines)


async def wait_for(predicate: Any, seconds: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")
