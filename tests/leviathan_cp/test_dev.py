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

from leviathan_cp.ports import free_port

pytestmark = pytest.mark.slow


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


def _env(home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIATHAN_", "REDIS_"))}
    root = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env.update({"HOME": str(home), "LEVIATHAN_API_PORT": str(port), "PYTHONPATH": pythonpath})
    return env


def _start_dev(work: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "leviathan_cp", "dev", *args],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _end(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


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
    port = free_port()
    env = _env(home, port)
    if queue == "fakeredis":
        env["PATH"] = _path_without_redis(tmp_path)
    proc = _start_dev(work, env)
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
        assert f"console: http://127.0.0.1:{port}/console#token={token}\n" in banner
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    finally:
        _end(proc)
    assert proc.returncode == 0
    # one closing line naming what stopped; the state file is gone with the stack
    assert rest.strip().splitlines()[-1] == (
        f"leviathan-cp dev: stopped ingest, the consumer and the queue ({queue}); "
        "everything accepted is stored, nothing is lost."
    )
    assert not (work / ".leviathan" / "dev.json").exists()
    # redis-server removed its pidfile: the next dev here does not mistake it for a leftover
    assert not (work / ".leviathan" / "redis" / "redis.pid").exists()
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


def _cli(work: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leviathan_cp", *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_second_dev_in_the_folder_refuses_and_tools_use_the_state_file(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not on PATH")
    home, work, other = tmp_path / "home", tmp_path / "work", tmp_path / "other"
    for d in (home, work, other):
        d.mkdir()
    port = free_port()
    env = _env(home, port)
    first = _start_dev(work, env)
    try:
        _wait_banner(first, 60)
        state = orjson.loads((work / ".leviathan" / "dev.json").read_bytes())
        assert state["pid"] == first.pid
        assert state["url"] == f"http://127.0.0.1:{port}"
        assert state["redis_url"].startswith("redis://127.0.0.1:")
        assert state["consumer_health"].startswith("http://127.0.0.1:")
        assert state["data_dir"] == str((work / ".leviathan" / "data").resolve())

        # same folder, another port: refused at once, before a second queue touches the AOF
        again = _cli(work, _env(home, free_port()), "dev")
        assert again.returncode == 2
        assert again.stdout == ""
        assert again.stderr == (
            f"leviathan-cp dev: already running in {work} "
            f"(pid {first.pid}, http://127.0.0.1:{port})\n"
        )
        # another folder, the same port: the port is named, no false banner
        taken = _cli(other, env, "dev")
        assert taken.returncode == 2
        assert "listening" not in taken.stdout
        assert f"port {port} on 127.0.0.1 is taken" in taken.stderr
        assert not (other / ".leviathan" / "redis").exists()

        # the admin commands run here find the dev stack, not whatever is on :6379
        tools_env = {k: v for k, v in env.items() if k != "LEVIATHAN_API_PORT"}
        dlq = _cli(work, tools_env, "dlq", "list")
        assert dlq.returncode == 0, dlq.stderr
        assert dlq.stdout == "no dead letters (every dead stream is empty)\n"
        assert f"using the dev stack running here (pid {first.pid})" in dlq.stderr
        assert state["redis_url"] in dlq.stderr
        verify = _cli(work, tools_env, "verify")
        assert verify.returncode == 0, verify.stderr
        assert verify.stdout.startswith("partition 0: ok, ")
        bench = _cli(
            work, tools_env, "bench", "--bundles", "2", "--workers", "1", "--burst-size", "5"
        )
        assert bench.returncode == 0, bench.stdout + bench.stderr
        assert f"bench: posting to http://127.0.0.1:{port}/v1/events/ingest" in bench.stderr
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=90)
    finally:
        _end(first)
    assert first.returncode == 0
    # the lock went with the process: the folder starts again
    assert not (work / ".leviathan" / "dev.json").exists()


def _damaged_aof(redis_dir: Path) -> Path:
    aof = redis_dir / "appendonlydir"
    aof.mkdir(parents=True)
    (aof / "appendonly.aof.1.incr.aof").write_bytes(b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\ngarbage*3")
    manifest = aof / "appendonly.aof.manifest"
    manifest.write_text("file appendonly.aof.1.incr.aof seq 1 type i\n")
    return manifest


def test_a_damaged_queue_file_is_one_line_naming_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not on PATH")
    from leviathan_cp.dev import run

    monkeypatch.delenv("LEVIATHAN_REDIS_URL", raising=False)
    monkeypatch.setenv("LEVIATHAN_API_PORT", str(free_port()))
    base = tmp_path / "work" / ".leviathan"
    manifest = _damaged_aof(base / "redis")
    assert run(base, tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"redis-check-aof --fix {manifest}" in err
    assert str(base / "redis" / "redis.log") in err


def test_an_unreachable_redis_url_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from leviathan_cp.dev import run

    closed = free_port()
    monkeypatch.setenv("LEVIATHAN_REDIS_URL", f"redis://:hunter2@127.0.0.1:{closed}/0")
    monkeypatch.setenv("LEVIATHAN_API_PORT", str(free_port()))
    assert run(tmp_path / "work" / ".leviathan", tmp_path) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"LEVIATHAN_REDIS_URL=redis://:***@127.0.0.1:{closed}/0 cannot be reached" in err
    assert "unset the variable" in err
    assert "hunter2" not in err


def test_a_taken_port_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from leviathan_cp.dev import run

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        monkeypatch.setenv("LEVIATHAN_API_PORT", str(port))
        assert run(tmp_path / "work" / ".leviathan", tmp_path) == 2
    err = capsys.readouterr().err
    assert err == (
        f"leviathan-cp dev: port {port} on 127.0.0.1 is taken by another program: stop it, "
        "or set LEVIATHAN_API_PORT to a free port\n"
    )
    assert not (tmp_path / "work" / ".leviathan" / "redis").exists()


def test_a_leftover_redis_server_on_the_queue_files_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """dev killed with SIGKILL leaves its redis-server appending to the AOF."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not on PATH")
    from leviathan_cp.dev import run

    base = tmp_path / "work" / ".leviathan"
    redis_dir = base / "redis"
    redis_dir.mkdir(parents=True)
    pidfile = redis_dir / "redis.pid"
    leftover = subprocess.Popen(
        [binary, "--port", str(free_port()), "--bind", "127.0.0.1", "--dir", str(redis_dir),
         "--pidfile", str(pidfile), "--appendonly", "yes", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        monkeypatch.delenv("LEVIATHAN_REDIS_URL", raising=False)
        monkeypatch.setenv("LEVIATHAN_API_PORT", str(free_port()))
        assert run(base, tmp_path) == 2
    finally:
        leftover.terminate()
        leftover.wait(timeout=15)
    err = capsys.readouterr().err
    assert err == (
        f"leviathan-cp dev: a redis-server left by an earlier dev (pid {leftover.pid}) still "
        f"uses {redis_dir}: stop it (kill {leftover.pid}) and start dev again\n"
    )
