"""``leviathan-cp dev``: the whole control plane on one machine with embedded defaults.

Pipeline position: a supervisor above both tiers. Starts a queue (leviathan_cp.devqueue),
then ``python -m consumer`` and ``leviathan-cp ingest`` as child processes with NDJSON storage
under ``./.leviathan/data`` and a token from ``~/.leviathan/control-plane-token``. On
Ctrl-C/SIGTERM it stops ingest first (it drains and stops accepting), then the consumer
(it finishes and acks its batch), then the queue — so nothing accepted is lost.

Before starting anything it takes ``./.leviathan/dev.lock`` (a second ``dev`` in the same
folder would start a second queue on the same append-only file and damage it) and checks
that the API port is free; while running it describes itself in ``./.leviathan/dev.json``
(:mod:`leviathan_cp.devstate`) for ``dlq``, ``verify`` and ``bench`` run beside it.
"""

from __future__ import annotations

import argparse
import errno
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import orjson
from filelock import FileLock, Timeout

from leviathan_cp import devstate
from leviathan_cp.devqueue import DevQueue, QueueError, free_port, redact, start_queue, wait_drained
from storage.queue import DEFAULT_PREFIX, GROUP, StreamLayout

STOP_TIMEOUT_S = 60.0


def ensure_token(home: Path) -> Path:
    """The token file (dir 700, file 600), created with a fresh token on first run."""
    directory = home / ".leviathan"
    directory.mkdir(mode=0o700, exist_ok=True)
    directory.chmod(0o700)
    path = directory / "control-plane-token"
    if not path.exists() or not path.read_text().strip():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    path.chmod(0o600)
    return path


def write_sample(base: Path) -> Path:
    """A small bundle a user can post right away (fresh ids each run: not a duplicate)."""
    run = secrets.token_hex(4)
    bundle = {
        "target": "demo",
        "bundle_id": f"bundle-dev-{run}",
        "events": [
            {
                "event_id": secrets.token_hex(16),
                "event_type": "attempt.started",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "actor_id": f"worker-dev-{run}",
                "payload": {"attempt_id": f"att-{run}", "task_id": "task-1", "status": "running"},
            }
        ],
        "artifacts": [],
    }
    path = base / "sample-bundle.json"
    path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    return path


def child_env(queue: DevQueue, data_dir: Path, token_file: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "LEVIATHAN_REDIS_URL": queue.url,
            "LEVIATHAN_CONTROL_PLANE_BACKEND": "ndjson",
            "LEVIATHAN_NDJSON_DIR": str(data_dir),
            "LEVIATHAN_CONTROL_PLANE_TOKEN_FILE": str(token_file),
            "LEVIATHAN_API_PORT": str(port),
        }
    )
    env.setdefault("LEVIATHAN_API_HOST", "127.0.0.1")
    env.setdefault("LEVIATHAN_CONSUMER_HOST", "127.0.0.1")
    env.setdefault("LEVIATHAN_CONSUMER_PORT", str(free_port()))
    # No load balancer to drain from locally: a short readiness-503 window is enough.
    env.setdefault("LEVIATHAN_DRAIN_SECONDS", "0.5")
    for key in ("LEVIATHAN_CONTROL_PLANE_TOKEN", "LEVIATHAN_CONTROL_PLANE_TOKENS"):
        env.pop(key, None)
    return env


def _spawn(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Own session so the terminal's Ctrl-C reaches only this supervisor (stop order matters).
    # ingest through leviathan_cp: one process serves writes, reads and the console.
    argv = ["leviathan_cp", "ingest"] if module == "ingest" else [module]
    return subprocess.Popen([sys.executable, "-m", *argv], env=env, start_new_session=True)


def _wait_healthy(
    url: str, procs: list[subprocess.Popen[bytes]], stop: threading.Event, timeout: float
) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stop.is_set():
        if any(p.poll() is not None for p in procs):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def _banner(url: str, token_file: Path, sample: Path, queue: DevQueue) -> None:
    token = token_file.read_text().strip()
    print(
        f"leviathan control plane (dev) listening on {url}\n"
        f"  console: {url}/console#token={token}\n"
        f"    (the link logs this browser in; the token stays out of server logs)\n"
        f"  queue: {queue.kind} at {redact(queue.url)}\n"
        f"  token file: {token_file}\n"
        f'  try: curl -sS -H "Authorization: Bearer $(cat {token_file})" '
        f"-H 'Content-Type: application/json' --data @{sample} '{url}/v1/events/ingest?wait=5'\n"
        "  Ctrl-C stops everything (ingest drains, consumer finishes its batch, queue last).",
        flush=True,
    )


class SetupError(Exception):
    """What keeps ``dev`` from starting, as one line for the terminal."""


def _port() -> int:
    text = os.environ.get("LEVIATHAN_API_PORT", "8000")
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SetupError(f"LEVIATHAN_API_PORT must be a port number (1-65535), not {text!r}")
    return int(text)


def _url(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in {'0.0.0.0', ''} else host}:{port}"


def _lock(base: Path) -> FileLock:
    """Hold the folder's dev lock, or say which ``dev`` holds it."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        lock = FileLock(base / devstate.LOCK_FILE)
        lock.acquire(timeout=0)
    except Timeout:
        state = devstate.read(base)
        where = f"pid {state.pid}, {state.url}" if state is not None else "starting up"
        raise SetupError(f"already running in {base.parent} ({where})") from None
    except OSError as exc:
        raise SetupError(f"cannot write {exc.filename or base}: {exc.strerror or exc}") from None
    return lock


def _check_port(host: str, port: int) -> None:
    """Refuse a taken port before starting anything (else another server answers for us)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # as aiohttp binds: a port in TIME_WAIT from an earlier run counts as free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise SetupError(
                    f"port {port} on {host} is taken by another program: stop it, or set "
                    f"LEVIATHAN_API_PORT to a free port"
                ) from None
            raise SetupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _prepare(base: Path, home: Path) -> tuple[Path, Path, Path]:
    """The data directory, token file and sample bundle, created as needed."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        data_dir = (base / "data").resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        return data_dir, ensure_token(home), write_sample(base).resolve()
    except OSError as exc:
        # a missing or read-only HOME or working directory: say which, no traceback
        raise SetupError(f"cannot write {exc.filename or base}: {exc.strerror or exc}") from None


def run(base: Path, home: Path) -> int:
    host = os.environ.get("LEVIATHAN_API_HOST", "127.0.0.1")
    lock: FileLock | None = None
    try:
        port = _port()
        lock = _lock(base)
        _check_port(host, port)
        data_dir, token_file, sample = _prepare(base, home)
        queue = start_queue(os.environ.get("LEVIATHAN_REDIS_URL"), (base / "redis").resolve())
    except (SetupError, QueueError) as exc:
        print(f"leviathan-cp dev: {exc}", file=sys.stderr, flush=True)
        if lock is not None:
            lock.release()
        return 2
    try:
        return _supervise(base, queue, data_dir, token_file, sample, _url(host, port))
    finally:
        devstate.remove(base)
        lock.release()


def _supervise(
    base: Path, queue: DevQueue, data_dir: Path, token_file: Path, sample: Path, url: str
) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    port = int(url.rsplit(":", 1)[1])
    env = child_env(queue, data_dir, token_file, port)
    consumer = _spawn("consumer", env)
    ingest = _spawn("ingest", env)
    code = 0
    drained = True
    try:
        healthy = _wait_healthy(f"http://127.0.0.1:{port}/healthz", [ingest, consumer], stop, 60)
        if stop.is_set():
            pass  # Ctrl-C during start-up: stop in order below, exit 0
        elif not healthy:
            print("leviathan-cp dev: a tier failed to start (see its output above)", flush=True)
            code = 1
        else:
            health = f"http://{env['LEVIATHAN_CONSUMER_HOST']}:{env['LEVIATHAN_CONSUMER_PORT']}"
            state = devstate.DevState(
                pid=os.getpid(),
                url=url,
                redis_url=queue.url,
                queue=queue.kind,
                consumer_health=health,
                data_dir=str(data_dir),
                token_file=str(token_file),
            )
            devstate.write(base, state)
            _banner(url, token_file, sample, queue)
            while not stop.wait(0.5):
                if ingest.poll() is not None or consumer.poll() is not None:
                    print("leviathan-cp dev: a tier exited unexpectedly", flush=True)
                    code = 1
                    break
    finally:
        ingest_rc = _stop(ingest)
        if consumer.poll() is None:
            layout = StreamLayout(
                prefix=env.get("LEVIATHAN_STREAM_PREFIX", DEFAULT_PREFIX),
                partitions=int(env.get("LEVIATHAN_PARTITIONS", "8")),
            )
            drained = wait_drained(queue.url, layout.streams(), GROUP, STOP_TIMEOUT_S)
            if not drained:
                print("leviathan-cp dev: consumer did not catch up; entries stay queued")
        consumer_rc = _stop(consumer)
        queue.stop()
    if code == 0 and (ingest_rc != 0 or consumer_rc != 0):
        print(f"leviathan-cp dev: ingest exited {ingest_rc}, consumer {consumer_rc}", flush=True)
        code = 1
    print(_farewell(queue, drained), flush=True)
    return code


def _farewell(queue: DevQueue, drained: bool) -> str:
    what = (
        f"stopped ingest, the consumer and the queue ({queue.kind})"
        if queue.kind != "external"
        else "stopped ingest and the consumer (the external queue keeps running)"
    )
    if drained:
        return f"leviathan-cp dev: {what}; everything accepted is stored, nothing is lost."
    if queue.kind == "fakeredis":
        return f"leviathan-cp dev: {what}; entries still queued in memory were LOST."
    return f"leviathan-cp dev: {what}; nothing accepted is lost (the rest waits in the queue)."


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="leviathan-cp dev",
        description="Run ingest + consumer locally (NDJSON under ./.leviathan, embedded queue).",
    ).parse_args(argv)
    return run(Path.cwd() / ".leviathan", Path.home())
