"""The Dockerfile's install steps, run without a Docker engine.

Same steps as the Dockerfile (keep them identical): 1) ``pip wheel`` the project and its
dependencies into a wheel dir, 2) install ``leviathan-control-plane`` from that dir only
(``--no-index``) into a fresh venv, 3) start ``leviathan-cp ingest`` and ``leviathan-cp
consumer`` from that venv against the real Redis and hit /healthz on both.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _healthz(port: int, proc: subprocess.Popen[bytes], timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                return int(resp.status)
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"/healthz on {port} never answered")


def test_wheel_installs_into_fresh_venv_and_both_tiers_are_healthy(
    tmp_path: Path, redis_url: str
) -> None:
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--wheel-dir", str(wheels), str(ROOT)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = [str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links"]
    subprocess.run([*install, str(wheels), "leviathan-control-plane"], check=True)
    entry = str(venv / "bin" / "leviathan-cp")
    api_port, health_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIATHAN_", "PYTHON"))}
    env.update(
        {
            "LEVIATHAN_REDIS_URL": redis_url,
            "LEVIATHAN_NDJSON_DIR": str(tmp_path / "data"),
            "LEVIATHAN_CONTROL_PLANE_TOKEN": "image-steps-token",
            "LEVIATHAN_API_HOST": "127.0.0.1",
            "LEVIATHAN_API_PORT": str(api_port),
            "LEVIATHAN_CONSUMER_HOST": "127.0.0.1",
            "LEVIATHAN_CONSUMER_PORT": str(health_port),
            "LEVIATHAN_DRAIN_SECONDS": "0",
        }
    )
    # cwd outside the source tree: the tiers must run from the installed wheel alone.
    procs = [
        subprocess.Popen([entry, tier], env=env, cwd=tmp_path) for tier in ("ingest", "consumer")
    ]
    try:
        assert _healthz(api_port, procs[0], 60) == 200
        assert _healthz(health_port, procs[1], 60) == 200
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=60) for proc in procs]
    assert codes == [0, 0]
