"""End to end on a real Redis Cluster: ``python -m ingest`` and ``python -m consumer`` with
their streams on three masters. An undecodable entry is dead-lettered to its partition's
dead stream and ``leviathan-cp dlq`` lists and replays it on the cluster."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from storage.queue import resolve
from tests.cluster.conftest import ClusterStackFactory
from tests.consumer.process_support import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_dead_letter_and_replay_on_a_cluster(cluster_stack: ClusterStackFactory) -> None:
    stack = cluster_stack("ndjson")
    await stack.start()
    redis = stack.settings().stream_redis()
    try:
        await resolve(redis.xadd(stack.layout.stream(2), {b"v": b"99", b"bundle": b"{}"}))
        for _ in range(100):
            if await stack.dead_letters() == 1:
                break
            await asyncio.sleep(0.1)
        [(dead_id, fields)] = await stack.dead_entries()
        assert fields[b"dead_reason"].startswith(b"undecodable"), fields
        assert await resolve(redis.xlen(stack.layout.dead_stream(2))) == 1
        # stopped, so the replayed entry is not dead-lettered again before we look
        assert await asyncio.to_thread(stack.consumer.stop) == 0
        env = stack.ingest.env

        def dlq(*args: str) -> str:
            out = subprocess.run(
                [sys.executable, "-m", "consumer.dlq", *args],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            return out.stdout

        listing = await asyncio.to_thread(dlq, "list")
        assert f"2/{dead_id}" in listing, listing
        assert "replayed 1" in await asyncio.to_thread(dlq, "replay", "--all")
        assert await resolve(redis.xlen(stack.layout.dead_stream(2))) == 0
    finally:
        await redis.aclose()
    await stack.stop()
