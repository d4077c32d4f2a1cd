"""webcore.serve: what every HTTP tier's process does once it listens."""

from __future__ import annotations

import asyncio
import gc
import os
import signal

import pytest
from aiohttp import web

from webcore import serve as serving
from webcore.settings import ApiSettings


async def test_every_tier_tunes_the_collector_once_listening(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reads allocate as much per request as writes: the query tier serves with the same
    collector tuning as ingest, applied before the tier's own start-up hook."""
    steps: list[str] = []
    monkeypatch.setattr(serving, "tune_gc", lambda: steps.append("gc"))

    def started() -> None:
        steps.append("after_start")
        # once serve() has its SIGTERM handler (installed right after this hook)
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)

    settings = ApiSettings(token="t" * 32, host="127.0.0.1", port=0, drain_seconds=0)
    code = await serving.serve(
        web.Application(), settings, "query", on_drain=lambda: None, after_start=started
    )
    assert code == 0
    assert steps == ["gc", "after_start"]


def test_tune_gc_freezes_start_up_objects_and_widens_the_young_generation() -> None:
    before = gc.get_threshold()
    try:
        serving.tune_gc()
        assert gc.get_threshold()[0] == serving.GC_GEN0_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
