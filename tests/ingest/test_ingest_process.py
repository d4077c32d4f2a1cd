"""``python -m ingest`` as a real process: SIGTERM drain against real Redis, bad settings."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from leviathan_cp.ports import free_port
from storage.envelope import decode
from storage.queue import StreamLayout, resolve
from tests.ingest.ingest_support import AUTH, TOKEN, bundle_body, raw

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = StreamLayout(prefix="ingest-proc-test", partitions=4)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVIATHAN_")}
    env.update(extra)
    return env


def _run_ingest(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``python -m ingest`` to its end (a refusal at start), output captured."""
    return subprocess.run(
        [sys.executable, "-m", "leviathan_cp", "ingest"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({}, "LEVIATHAN_CONTROL_PLANE_TOKEN"),
        ({"LEVIATHAN_CONTROL_PLANE_TOKEN": "t", "LEVIATHAN_API_PORT": "x"}, "LEVIATHAN_API_PORT"),
        (
            {"LEVIATHAN_CONTROL_PLANE_TOKEN": "t", "LEVIATHAN_MAX_EVENTS": "0"},
            "LEVIATHAN_MAX_EVENTS",
        ),
        # configured, but nothing to accept: every request would be a 401
        ({"LEVIATHAN_CONTROL_PLANE_TOKEN_FILE": "/nonexistent/tokens"}, "/nonexistent/tokens"),
        ({"LEVIATHAN_CONTROL_PLANE_TOKENS": " , "}, "LEVIATHAN_CONTROL_PLANE_TOKENS"),
    ],
)
def test_bad_settings_one_line_exit_2(env: dict[str, str], name: str) -> None:
    proc = _run_ingest(_env(**env))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert name in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.integration
def test_port_in_use_is_one_line_exit_1(redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(
            LEVIATHAN_CONTROL_PLANE_TOKEN=TOKEN,
            LEVIATHAN_REDIS_URL=redis_url,
            LEVIATHAN_API_HOST="127.0.0.1",
            LEVIATHAN_API_PORT=str(port),
            LEVIATHAN_STREAM_PREFIX=LAYOUT.prefix,
            LEVIATHAN_PARTITIONS=str(LAYOUT.partitions),
        )
        proc = _run_ingest(env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    refusal = [line for line in proc.stderr.splitlines() if line.startswith("ingest: ")]
    assert len(refusal) == 1, proc.stderr
    assert refusal[0].startswith(f"ingest: cannot listen on 127.0.0.1:{port}: ")


def _spawn(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "leviathan_cp", "ingest"], cwd=ROOT, env=env)


async def _post(session: aiohttp.ClientSession, url: str, bundle_id: str) -> str | None:
    try:
        async with session.post(url, data=raw(bundle_body(bundle_id, n=3)), headers=AUTH) as r:
            return bundle_id if r.status == 202 else None
    except aiohttp.ClientError:
        return None


async def _wait_up(
    session: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes]
) -> None:
    for _ in range(200):
        assert proc.poll() is None, "ingest exited during startup"
        try:
            async with session.get(f"{base}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("ingest did not become ready")


@pytest.mark.integration
@pytest.mark.slow
async def test_sigterm_mid_burst_keeps_every_accepted_bundle(redis_url: str) -> None:
    port = free_port()
    env = _env(
        LEVIATHAN_CONTROL_PLANE_TOKEN=TOKEN,
        LEVIATHAN_REDIS_URL=redis_url,
        LEVIATHAN_API_HOST="127.0.0.1",
        LEVIATHAN_API_PORT=str(port),
        LEVIATHAN_PARTITIONS=str(LAYOUT.partitions),
        LEVIATHAN_STREAM_PREFIX=LAYOUT.prefix,
        LEVIATHAN_DRAIN_SECONDS="0.3",
    )
    proc = _spawn(env)
    base = f"http://127.0.0.1:{port}"
    accepted: list[str] = []
    enough = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as session:
            await _wait_up(session, base, proc)
            url = f"{base}/v1/events/ingest"

            async def burst(worker: int) -> None:
                for i in range(400):
                    got = await _post(session, url, f"bundle-w{worker}-{i}")
                    if got is None and proc.poll() is not None:
                        return
                    if got is not None:
                        accepted.append(got)
                        if len(accepted) >= 100:
                            enough.set()

            workers = [asyncio.create_task(burst(w)) for w in range(8)]
            await asyncio.wait_for(enough.wait(), 30)
            proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*workers)
        code = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0
    redis = Redis.from_url(redis_url)
    try:
        stored = []
        for stream in LAYOUT.streams():
            for entry_id, fields in await resolve(redis.xrange(stream)):
                stored.append(decode(entry_id.decode(), fields).bundle.bundle_id)
    finally:
        await redis.aclose()
    assert set(accepted) <= set(stored)
    assert len(accepted) >= 100
