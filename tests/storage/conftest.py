"""The ``store`` fixture: every conformance test runs against both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from storage.base import EventStore
from storage.config import StorageSettings, create_store

StoreFactory = Callable[[], EventStore]


@pytest.fixture(params=["ndjson", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Builds (unopened) stores over the same on-disk state, to test restarts and writers."""
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("postgres_url")
        settings = StorageSettings(backend="postgres", postgres_dsn=dsn)
    else:
        settings = StorageSettings(backend="ndjson", ndjson_dir=tmp_path / "log")
    return lambda: create_store(settings)


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[EventStore]:
    instance = store_factory()
    await instance.open()
    try:
        yield instance
    finally:
        await instance.close()
