"""``leviathan-cp dev`` end to end: start, post a bundle with ?wait=5, find it on disk, SIGINT.

Runs the real console entry (``python -m leviathan_cp dev``) with HOME and cwd in tmp dirs,
once with the local redis-server and once with it hidden from PATH (fakeredis fallback).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _post(url: str, body: bytes, token: str) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _wait_banner(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            return "".join(lines)
    raise AssertionError("dev never printed its banner:\n" + "".join(lines))


def _path_without_redis(tmp_path: Path) -> str:
    """PATH with the directories holding redis-server replaced by a shim dir without it."""
    keep = []
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and not (Path(entry) / "redis-server").exists():
            keep.append(entry)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").symlink_to(sys.executable)
    return os.pathsep.join([str(shim), *keep])


@pytest.mark.parametrize("queue", ["redis-server", "fakeredis"])
def test_dev_stores_posted_bundle_and_exits_cleanly(tmp_path: Path, queue: str) -> None:
    if queue == "redis-server" and shutil.which("redis-server") is None:
        if os.environ.get("LEVIATHAN_REQUIRE_SERVICES") == "1":
            pytest.fail("redis-server not on PATH")
        pytest.skip("redis-server not on PATH")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIATHAN_", "REDIS_"))}
    root = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.update({"HOME": str(home), "LEVIATHAN_API_PORT": str(port), "PYTHONPATH": pythonpath})
    if queue == "fakeredis":
        env["PATH"] = _path_without_redis(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "leviathan_cp", "dev"],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        banner = _wait_banner(proc, 60)
        assert f"queue: {queue}" in banner
        token_file = home / ".leviathan" / "control-plane-token"
        assert str(token_file) in banner
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert token_file.parent.stat().st_mode & 0o777 == 0o700
        sample = work / ".leviathan" / "sample-bundle.json"
        bundle = orjson.loads(sample.read_bytes())
        token = token_file.read_text().strip()
        url = f"http://127.0.0.1:{port}/v1/events/ingest?wait=5"
        status, body = _post(url, sample.read_bytes(), token)
        assert status in {200, 202}, body
        assert _post(url, sample.read_bytes(), "wrong-token")[0] == 401
        # Accepted without waiting, then Ctrl-C at once: dev drains the queue before exiting.
        late = dict(bundle, bundle_id="bundle-late")
        late["events"] = [dict(bundle["events"][0], event_id="late" + "0" * 28)]
        no_wait = url.split("?")[0]
        assert _post(no_wait, orjson.dumps(late), token)[0] in {200, 202}
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
    stored = b"".join(p.read_bytes() for p in (work / ".leviathan" / "data").rglob("*.ndjson"))
    assert bundle["events"][0]["event_id"].encode() in stored
    assert b"late" + b"0" * 28 in stored


def test_dev_without_a_writable_home_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from leviathan_cp.dev import run

    missing_home = tmp_path / "no-such-home"
    assert run(tmp_path / "work", missing_home) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"leviathan-cp dev: cannot write {missing_home / '.leviathan'}")
    assert not missing_home.exists()  # nothing created in a HOME that is not there


@pytest.mark.parametrize("port", ["eighty", "0", "70000", ""])
def test_dev_with_a_bad_port_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    from leviathan_cp.dev import run

    monkeypatch.setenv("LEVIATHAN_API_PORT", port)
    assert run(tmp_path / "work", tmp_path) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"leviathan-cp dev: LEVIATHAN_API_PORT must be a port number (1-65535), not {port!r}\n"
    )
    assert not (tmp_path / ".leviathan").exists()  # refused before touching anything
