"""Fixtures for consumer tests: a fakeredis Reader over a real NDJSON store.

Unit tests call the reader's batch handler and maintenance functions directly (fast, no
services); integration tests in this package use the real Redis and both backends.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis

from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, ensure_group
from consumer.settings import ConsumerSettings
from storage.base import BatchResult, EventStore, StorageDataError, StorageUnavailable
from storage.config import create_store
from storage.envelope import Envelope, encode
from storage.queue import StreamLayout, resolve
from storage.schema import Bundle

SettingsFactory = Callable[..., ConsumerSettings]


def make_settings(tmp_path: Path, **overrides: Any) -> ConsumerSettings:
    values: dict[str, Any] = {
        "consumer_name": "c1",
        "backend": "ndjson",
        "ndjson_dir": tmp_path / "data",
        "partitions": 2,
        "batch": 50,
        "block_ms": 50,
        "claim_idle_ms": 100,
        "max_deliveries": 3,
        "retry_min_s": 0.01,
        "retry_max_s": 0.05,
        "health_port": 0,
    }
    values.update(overrides)
    return ConsumerSettings(**values)


class FlakyStore:
    """Wraps a real store; the first ``failures`` write_batch calls raise StorageUnavailable."""

    def __init__(self, inner: EventStore, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise StorageUnavailable("database went away (test)")
        return await self.inner.write_batch(partition, envelopes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RefusingStore(FlakyStore):
    """Wraps a real store; a batch holding a bundle in ``bad`` raises StorageDataError, as a
    backend does for a value it cannot store. ``down`` makes every call StorageUnavailable
    (an outage), and so does every call from number ``down_from`` on. Records every call."""

    def __init__(self, inner: EventStore, bad: set[str]) -> None:
        super().__init__(inner, failures=0)
        self.bad = bad
        self.down = False
        self.down_from: int | None = None
        self.batches: list[list[str]] = []

    async def write_batch(self, partition: int, envelopes: Sequence[Envelope]) -> BatchResult:
        self.calls += 1
        self.batches.append([e.bundle.bundle_id for e in envelopes])
        if self.down or (self.down_from is not None and self.calls >= self.down_from):
            raise StorageUnavailable("database went away (test)")
        refused = [e.bundle.bundle_id for e in envelopes if e.bundle.bundle_id in self.bad]
        if refused:
            raise StorageDataError(f"value out of range in bundle {refused[0]} (test)")
        return await self.inner.write_batch(partition, envelopes)


@pytest.fixture
async def fake_redis() -> AsyncIterator[Redis]:
    client = fakeredis.FakeAsyncRedis()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def ndjson_store(tmp_path: Path) -> AsyncIterator[EventStore]:
    store = create_store(make_settings(tmp_path))
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def reader(fake_redis: Redis, ndjson_store: EventStore, tmp_path: Path) -> Reader:
    settings = make_settings(tmp_path)
    await ensure_group(fake_redis, settings.layout)
    return Reader(fake_redis, ndjson_store, settings, ConsumerMetrics())


@pytest.fixture(params=["ndjson", "postgres"])
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path) -> SettingsFactory:
    """Settings factory for integration tests, over each real backend."""
    extra: dict[str, Any] = {"backend": request.param}
    if request.param == "postgres":
        if importlib.util.find_spec("storage.postgres.store") is None:
            pytest.skip("storage.postgres.store has not landed yet")
        extra["postgres_dsn"] = request.getfixturevalue("postgres_url")
    return lambda **kw: make_settings(tmp_path, **{**extra, **kw})


async def add_bundles(
    redis: Redis, layout: StreamLayout, raws: Sequence[dict[str, Any]]
) -> list[tuple[int, str]]:
    """XADD each raw bundle to its partition as ingest would; returns (partition, id)."""
    out = []
    for raw in raws:
        bundle = Bundle.model_validate(raw)
        partition = layout.partition_of(bundle.bundle_id)
        entry_id = await resolve(redis.xadd(layout.stream(partition), encode(bundle, "test")))  # type: ignore[arg-type]
        out.append((partition, entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)))
    return out
