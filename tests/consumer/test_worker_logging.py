"""consumer.worker's log filter: routine cron lines hidden at INFO, failures always shown."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from consumer.worker import _QuietRoutine


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
