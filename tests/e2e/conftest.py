"""Fixtures of the end-to-end tests: real ``python -m ingest`` and ``python -m consumer``.

``settings`` runs each test on NDJSON and on PostgreSQL; ``processes`` starts both tiers on
those settings against the test Redis and stops them with SIGTERM afterwards (the consumer
must exit 0: nothing held is lost on shutdown).
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.settings import ConsumerSettings
from leviathan_cp.ports import free_port
from tests.consumer.conftest import make_settings
from tests.consumer.process_support import (
    ROOT,
    consumer_env,
    start_consumer,
)

TOKEN = "e2e-token-0123456789"


@pytest.fixture(params=["ndjson", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> ConsumerSettings:
    if importlib.util.find_spec("ingest.__main__") is None:
        pytest.skip("ingest/__main__.py has not landed yet")
    extra: dict[str, Any] = {"backend": request.param, "partitions": 4}
    if request.param == "postgres":
        extra["postgres_dsn"] = request.getfixturevalue("postgres_url")
    return make_settings(tmp_path, consumer_name="e2e", **extra)


@pytest.fixture
def processes(
    settings: ConsumerSettings, redis_url: str, tmp_path: Path
) -> Iterator[tuple[str, str]]:
    """(ingest base URL, consumer base URL) of two running processes."""
    env = consumer_env(settings, redis_url)
    api_port = free_port()
    ingest_env = {
        **env,
        "LEVIATHAN_CONTROL_PLANE_TOKEN": TOKEN,
        "LEVIATHAN_API_HOST": "127.0.0.1",
        "LEVIATHAN_API_PORT": str(api_port),
    }
    with (tmp_path / "ingest.log").open("ab") as log:
        ingest = subprocess.Popen(
            [sys.executable, "-m", "leviathan_cp", "ingest"],
            cwd=ROOT,
            env=ingest_env,
            stdout=log,
            stderr=log,
        )
    consumer = start_consumer(env, tmp_path / "consumer.log")
    try:
        yield (
            f"http://127.0.0.1:{api_port}",
            f"http://127.0.0.1:{env['LEVIATHAN_CONSUMER_PORT']}",
        )
    finally:
        for proc in (ingest, consumer):
            proc.send_signal(signal.SIGTERM)
        for proc in (ingest, consumer):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs = {
            n: (tmp_path / f"{n}.log").read_text(errors="replace")[-2000:]
            for n in ("ingest", "consumer")
        }
        assert consumer.returncode == 0, logs["consumer"]
