"""consumer.worker's logging: routine cron lines hidden at INFO, failures always shown, and a
maintenance job that cannot reach Redis logs one line instead of a traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import patch

import pytest
from redis.asyncio import Redis

from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader
from consumer.worker import _QuietRoutine, lag_job, reclaim_job, stale_consumers_job, trim_job
from storage.config import create_store
from tests.consumer.conftest import make_settings


def _record(level: int, msg: str) -> logging.LogRecord:
    return logging.LogRecord("arq.worker", level, __file__, 1, msg, None, None)


@pytest.fixture(autouse=True)
def _info_root() -> Iterator[None]:
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(before)


def test_routine_cron_and_health_lines_are_dropped() -> None:
    quiet = _QuietRoutine()
    assert not quiet.filter(_record(logging.INFO, "  0.49s → cron:lag_job()"))
    assert not quiet.filter(_record(logging.INFO, "  0.01s ← cron:trim_job ● 0"))
    assert not quiet.filter(_record(logging.INFO, "recording health: Nov-28 j_complete=6"))


def test_operator_jobs_and_failures_are_kept() -> None:
    quiet = _QuietRoutine()
    assert quiet.filter(_record(logging.INFO, "  0.10s → 1a2b:replay_dead_letters()"))
    assert quiet.filter(_record(logging.ERROR, "  1.00s ! cron:trim_job failed, ConnectionError"))
    assert quiet.filter(_record(logging.INFO, "Starting worker for 6 functions"))


def test_debug_shows_everything() -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    assert _QuietRoutine().filter(_record(logging.INFO, "  0.49s → cron:lag_job()"))


async def test_maintenance_jobs_log_one_line_while_redis_is_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, redis_url="redis://127.0.0.1:1/0")
    redis = Redis.from_url(settings.redis_url)
    store = create_store(settings)
    reader = Reader(redis, store, settings, ConsumerMetrics())
    for state in reader.states:
        state.resumed = True
        reader.ownership.held.add(state.partition)  # reclaim asks Redis only for these
    deps = SimpleNamespace(reader=reader, metrics=reader.metrics)
    ctx = {"deps": deps}
    with (
        patch("consumer.worker.deps", lambda ctx: ctx["deps"]),
        caplog.at_level(logging.WARNING, logger="consumer.worker"),
    ):
        assert await reclaim_job(ctx) == 0
        assert await trim_job(ctx) == 0
        assert await stale_consumers_job(ctx) == []
        await lag_job(ctx)
    await redis.aclose()
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"{what} skipped, Redis unavailable: ConnectionError"
        for what in ("reclaim", "trim", "stale consumer removal", "lag metrics")
    ]
    assert all(r.exc_info is None for r in caplog.records)
