"""The worker client against real ``python -m ingest`` and ``python -m consumer`` processes,
each test on NDJSON and on PostgreSQL:

- the control plane down: one process spools 100 bundles and exits; the control plane comes
  up; a second process on the same spool delivers them: every event stored once;
- the ingest process frozen (SIGSTOP) for 8 s under 300 bundles, then killed and restarted:
  ``flush`` returns True and every event is stored exactly once;
- a tiny high-water mark: the client waits as ``Retry-After`` says until the consumer
  drains, a 422 bundle lands in ``rejected/`` with the server's errors, the rest is stored.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from leviathan_client import Client
from leviathan_client.retry import Backoff
from leviathan_client.spool import pending_files
from leviathan_client.transport import Answer

from leviathan_cp.ports import free_port
from storage.config import create_store
from tests.client.worker import EVENTS_PER_BUNDLE, TOKEN, expected_ids, make_bundle
from tests.consumer.conftest import make_settings
from tests.consumer.process_support import ROOT, consumer_env, start_consumer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class ControlPlane:
    """One ingest and one consumer process (NDJSON), each started and stopped on demand."""

    def __init__(
        self, tmp_path: Path, redis_url: str, backend: dict[str, Any], **ingest_env: str
    ) -> None:
        self.tmp = tmp_path
        self.settings = make_settings(tmp_path, consumer_name="client-e2e", partitions=4, **backend)
        self.env = consumer_env(self.settings, redis_url)
        self.url = f"http://127.0.0.1:{free_port()}"
        self.ingest_env = {
            **self.env,
            "LEVIATHAN_CONTROL_PLANE_TOKEN": TOKEN,
            "LEVIATHAN_API_HOST": "127.0.0.1",
            "LEVIATHAN_API_PORT": self.url.rsplit(":", 1)[1],
            **ingest_env,
        }
        self.ingest: subprocess.Popen[bytes] | None = None
        self.consumer: subprocess.Popen[bytes] | None = None

    def start_ingest(self) -> None:
        with (self.tmp / "ingest.log").open("ab") as log:
            self.ingest = subprocess.Popen(
                [sys.executable, "-m", "ingest"],
                cwd=ROOT,
                env=self.ingest_env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"ingest not ready: {self.log('ingest')}")

    def start_consumer(self) -> None:
        self.consumer = start_consumer(self.env, self.tmp / "consumer.log")

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in (self.ingest, self.consumer):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in (self.ingest, self.consumer):
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    async def _stored(self) -> list[str]:
        store = create_store(self.settings)
        await store.open()
        try:
            return [e.event_id async for e in store.iter_events()]
        finally:
            await store.close()

    def stored_when(self, expected: set[str], seconds: float = 90) -> Counter[str]:
        """The stored event ids (with counts) once every expected one is there."""
        deadline = time.monotonic() + seconds
        while True:
            stored = Counter(asyncio.run(self._stored()))
            if expected <= stored.keys() or time.monotonic() > deadline:
                return stored
            time.sleep(0.3)


@pytest.fixture(params=["ndjson", "postgres"])
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "postgres":
        return {"backend": "postgres", "postgres_dsn": request.getfixturevalue("postgres_url")}
    return {"backend": "ndjson"}


@pytest.fixture
def plane(tmp_path: Path, redis_url: str, backend: dict[str, Any]) -> Iterator[ControlPlane]:
    cp = ControlPlane(tmp_path, redis_url, backend)
    yield cp
    cp.stop()


def _worker(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVIATHAN_")}
    done = subprocess.run(
        [sys.executable, "-m", "tests.client.worker", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return done, time.monotonic() - started


def assert_once(stored: Counter[str], expected: set[str]) -> None:
    missing = expected - stored.keys()
    doubled = {k: n for k, n in stored.items() if n > 1}
    assert not missing, f"{len(missing)} of {len(expected)} events not stored"
    assert not doubled, f"stored more than once: {list(doubled.items())[:5]}"


def test_a_spool_outlives_a_control_plane_outage(plane: ControlPlane, tmp_path: Path) -> None:
    spool = str(tmp_path / "spool")
    sent, seconds = _worker("send", plane.url, spool, "100", "spool")
    assert sent.returncode == 1, sent.stderr  # nothing delivered: the control plane is down
    assert json.loads(sent.stdout)["delivered"] == 0
    assert seconds < 30, f"the first worker took {seconds:.1f} s to exit"
    assert len(pending_files(Path(spool))) == 100

    plane.start_ingest()
    plane.start_consumer()
    flushed, _ = _worker("flush", plane.url, spool)
    assert flushed.returncode == 0, flushed.stderr
    assert json.loads(flushed.stdout)["delivered"] == 100
    assert pending_files(Path(spool)) == []
    expected = expected_ids("spool", 100)
    assert len(expected) == 100 * EVENTS_PER_BUNDLE
    assert_once(plane.stored_when(expected), expected)


def test_a_frozen_then_restarted_ingest_loses_and_doubles_nothing(
    plane: ControlPlane, tmp_path: Path
) -> None:
    plane.start_ingest()
    plane.start_consumer()
    assert plane.ingest is not None
    backoff = Backoff(base=0.1, cap=1.0)
    with Client(
        plane.url, TOKEN, spool_dir=tmp_path / "spool", timeout=2, backoff=backoff
    ) as client:
        for i in range(100):
            client.send(make_bundle("frozen", i))
        deadline = time.monotonic() + 60
        while client.stats.delivered < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        plane.ingest.send_signal(signal.SIGSTOP)
        for i in range(100, 300):
            client.send(make_bundle("frozen", i))
        time.sleep(8)
        assert client.stats.delivered < 300
        plane.ingest.kill()
        plane.ingest.wait()
        plane.start_ingest()
        assert client.flush(120)
        assert client.stats.delivered == 300
        assert client.stats.retries > 0
    expected = expected_ids("frozen", 300)
    assert_once(plane.stored_when(expected), expected)


class Recording(Backoff):
    def __init__(self) -> None:
        super().__init__(base=0.05, cap=0.5)
        self.waits: list[tuple[int, float]] = []

    def delay(self, attempt: int, outcome: Answer | BaseException) -> float:
        value = super().delay(attempt, outcome)
        self.waits.append((outcome.status if isinstance(outcome, Answer) else 0, value))
        return value


def test_backpressure_is_waited_out_and_a_422_does_not_block_the_rest(
    tmp_path: Path, redis_url: str, backend: dict[str, Any]
) -> None:
    plane = ControlPlane(
        tmp_path,
        redis_url,
        backend,
        LEVIATHAN_QUEUE_HIGH_WATER="20",
        LEVIATHAN_LAG_CACHE_SECONDS="0",
        LEVIATHAN_RETRY_AFTER_SECONDS="2",
    )
    try:
        plane.start_ingest()  # no consumer yet: the lag grows past the mark
        backoff = Recording()
        spool = tmp_path / "spool"
        bad = make_bundle("bp", 999)
        bad["bundle_id"] = "bp-bad"
        bad["events"][0]["timestamp"] = "not a time"
        with Client(plane.url, TOKEN, spool_dir=spool, backoff=backoff, timeout=5) as client:
            for i in range(60):
                client.send(make_bundle("bp", i))
                if i == 5:
                    client.send(bad)
            deadline = time.monotonic() + 60
            while not any(s == 503 for s, _ in backoff.waits) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not client.flush(1)  # held back: over the high-water mark
            plane.start_consumer()
            assert client.flush(120), plane.log("ingest")
            assert (client.stats.delivered, client.stats.rejected) == (60, 1)
        waits_503 = [d for s, d in backoff.waits if s == 503]
        assert waits_503
        assert set(waits_503) == {2.0}  # exactly what Retry-After said
        rejected = sorted((spool / "rejected").iterdir())
        assert len(rejected) == 2
        assert json.loads(rejected[0].read_text())["bundle_id"] == "bp-bad"
        answer = json.loads(rejected[1].read_text())
        assert answer["status"] == 422
        locs = [e["loc"] for e in answer["answer"]["errors"]]
        assert ["events", 0, "timestamp"] in locs, answer
        expected = expected_ids("bp", 60)
        assert_once(plane.stored_when(expected), expected)
    finally:
        plane.stop()
