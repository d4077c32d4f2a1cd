"""The Dockerfile's install steps, run without a Docker engine.

Same steps as the Dockerfile (keep them identical; a test below checks that the Dockerfile
runs these pip commands): 1) ``pip wheel`` every dependency pinned in
requirements/runtime.txt, hashes required, then the project's wheel with ``--no-deps``, into
a wheel dir, 2) install ``leviathan-control-plane`` from that dir only (``--no-index``) into a
fresh venv, 3) start ``leviathan-cp ingest`` and ``leviathan-cp consumer`` from that venv
against the real Redis and hit /healthz on both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from leviathan_cp.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
# The Dockerfile's pip steps with the builder's paths (WORKDIR /src, /wheels); the test runs
# the same arguments with its own wheel dir and the checkout as the project.
WHEEL_DEPS = ["wheel", "--no-cache-dir", "--require-hashes", "--wheel-dir", "/wheels"]
WHEEL_DEPS += ["-r", "requirements/runtime.txt"]
WHEEL_PROJECT = ["wheel", "--no-cache-dir", "--no-deps", "--wheel-dir", "/wheels", "."]
INSTALL = ["install", "--no-cache-dir", "--no-index", "--find-links", "/wheels"]
INSTALL += ["leviathan-control-plane"]


def _in_builder(args: list[str], wheels: Path) -> list[str]:
    """One Dockerfile step's arguments with this test's wheel dir and source tree."""
    paths = {"/wheels": str(wheels), ".": str(ROOT)}
    paths["requirements/runtime.txt"] = str(ROOT / "requirements" / "runtime.txt")
    return [paths.get(arg, arg) for arg in args]


def test_the_dockerfile_runs_the_steps_this_test_replays() -> None:
    # one line per instruction, continuation lines joined, runs of blanks squeezed
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    for args in (WHEEL_DEPS, WHEEL_PROJECT):
        assert f"RUN python -m pip {' '.join(args)}" in lines, args
    assert any(f"/opt/venv/bin/pip {' '.join(INSTALL)}" in line for line in lines)


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


@pytest.mark.slow
@pytest.mark.integration
def test_wheel_installs_into_fresh_venv_and_both_tiers_are_healthy(
    tmp_path: Path, redis_url: str
) -> None:
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    pip = [sys.executable, "-m", "pip", "-q"]
    for step in (WHEEL_DEPS, WHEEL_PROJECT):
        subprocess.run([*pip, *_in_builder(step, wheels)], check=True, cwd=ROOT)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    venv_pip = [str(venv / "bin" / "pip"), "-q"]
    subprocess.run([*venv_pip, *_in_builder(INSTALL, wheels)], check=True)
    entry = str(venv / "bin" / "leviathan-cp")
    api_port, health_port = free_port(), free_port()
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


def test_the_image_copies_every_package_the_wheel_holds() -> None:
    """The builder stage copies package folders by name: a package the wheel's
    ``packages.find`` includes but the Dockerfile does not copy is missing from the image
    (an ingest container that cannot import the read tier never turns healthy)."""
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in includes}
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    assert packages <= copied, f"Dockerfile copies no {sorted(packages - copied)}"
