"""``leviathan-cp dev``: the whole control plane on one machine with embedded defaults.

Pipeline position: a supervisor above both tiers. Starts a queue (leviathan_cp.devqueue),
then ``python -m consumer`` and ``leviathan-cp ingest`` as child processes with a token from
``~/.leviathan/control-plane-token`` and one of three storages: NDJSON under
``./.leviathan/data`` (the default), the PostgreSQL that ``LEVIATHAN_CONTROL_PLANE_BACKEND=
postgres`` with ``POSTGRES_DSN`` (or ``POSTGRES_*``) names, or with ``--postgres`` a private
cluster under ``./.leviathan/postgres`` (:mod:`leviathan_cp.devpostgres`); PostgreSQL is
migrated before the tiers start. On Ctrl-C/SIGTERM it stops ingest first (it drains and
stops accepting), waits a few seconds for the consumer to finish what is queued (counted by
:func:`leviathan_cp.devqueue.queued`, which does not trust Redis' lag counter), stops the
consumer (it finishes and acks its batch), then the queue — so nothing accepted is lost.

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
from dataclasses import dataclass
from pathlib import Path

import orjson
from filelock import FileLock, Timeout

from leviathan_cp import devpostgres, devstate
from leviathan_cp.devqueue import DevQueue, QueueError, redact, start_queue, wait_drained
from leviathan_cp.ports import free_port
from storage.queue import DEFAULT_PREFIX, GROUP, StreamLayout

STOP_TIMEOUT_S = 60.0
# How long Ctrl-C waits for the consumer to finish what is queued. A durable queue keeps
# the rest for the next start, so a few seconds; the in-memory one loses it, so longer.
DRAIN_WAIT_S = {"fakeredis": 60.0}
DRAIN_WAIT_DURABLE_S = 8.0


@dataclass
class DevStorage:
    """Where the tiers store: ``backend`` and its location, and what stops it."""

    backend: str
    location: str  # the NDJSON directory, or the PostgreSQL DSN
    kind: str  # for the banner: "ndjson", "postgres", "postgres (private cluster)"
    server: devpostgres.DevPostgres | None = None

    def describe(self) -> str:
        where = redact(self.location) if self.backend == "postgres" else self.location
        return f"{self.kind} at {where}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


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


def child_env(queue: DevQueue, storage: DevStorage, token_file: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "LEVIATHAN_REDIS_URL": queue.url,
            "LEVIATHAN_CONTROL_PLANE_BACKEND": storage.backend,
            "LEVIATHAN_CONTROL_PLANE_TOKEN_FILE": str(token_file),
            "LEVIATHAN_API_PORT": str(port),
        }
    )
    env.pop("LEVIATHAN_BACKEND", None)  # the other name of the backend setting
    if storage.backend == "postgres":
        env["POSTGRES_DSN"] = storage.location
        env.pop("LEVIATHAN_POSTGRES_URL", None)
    else:
        env["LEVIATHAN_NDJSON_DIR"] = storage.location
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


def _banner(url: str, token_file: Path, sample: Path, queue: DevQueue, storage: DevStorage) -> None:
    token = token_file.read_text().strip()
    print(
        f"leviathan control plane (dev) listening on {url}\n"
        f"  console: {url}/console#token={token}\n"
        f"    (the link logs this browser in; the token stays out of server logs)\n"
        f"  queue: {queue.kind} at {redact(queue.url)}\n"
        f"  storage: {storage.describe()}\n"
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


def _storage(base: Path, data_dir: Path, private_postgres: bool) -> DevStorage:
    """The storage the tiers use: ``--postgres``, else the configured backend (migrated)."""
    if private_postgres:
        server = devpostgres.start((base / "postgres").resolve())
        storage = DevStorage("postgres", server.dsn, "postgres (private cluster)", server)
    else:
        from pydantic import ValidationError

        from storage.config import StorageSettings, settings_error_line

        try:
            settings = StorageSettings()
        except ValidationError as exc:
            raise SetupError(settings_error_line(exc)) from None
        if settings.backend != "postgres":
            return DevStorage("ndjson", str(data_dir), "ndjson")
        storage = DevStorage("postgres", settings.postgres_url(), "postgres")
    try:
        _migrate(storage.location)
    except SetupError:
        storage.stop()
        raise
    return storage


def _migrate(dsn: str) -> None:
    import asyncio

    from storage.base import StorageError
    from storage.postgres.migrate import migrate

    try:
        asyncio.run(migrate(dsn))
    except (OSError, StorageError) as exc:
        raise SetupError(f"cannot migrate PostgreSQL at {redact(dsn)}: {exc}") from None


def run(base: Path, home: Path, private_postgres: bool = False) -> int:
    host = os.environ.get("LEVIATHAN_API_HOST", "127.0.0.1")
    lock: FileLock | None = None
    queue: DevQueue | None = None
    try:
        port = _port()
        lock = _lock(base)
        _check_port(host, port)
        data_dir, token_file, sample = _prepare(base, home)
        queue = start_queue(os.environ.get("LEVIATHAN_REDIS_URL"), (base / "redis").resolve())
        storage = _storage(base, data_dir, private_postgres)
    except (SetupError, QueueError) as exc:
        print(f"leviathan-cp dev: {exc}", file=sys.stderr, flush=True)
        if queue is not None:
            queue.stop()
        if lock is not None:
            lock.release()
        return 2
    try:
        return _supervise(base, queue, storage, token_file, sample, _url(host, port))
    finally:
        storage.stop()
        devstate.remove(base)
        lock.release()


def _supervise(
    base: Path, queue: DevQueue, storage: DevStorage, token_file: Path, sample: Path, url: str
) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    port = int(url.rsplit(":", 1)[1])
    env = child_env(queue, storage, token_file, port)
    consumer = _spawn("consumer", env)
    ingest = _spawn("ingest", env)
    code = 0
    left = 0
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
                data_dir=storage.location if storage.backend == "ndjson" else "",
                token_file=str(token_file),
                backend=storage.backend,
                postgres_dsn=storage.location if storage.backend == "postgres" else "",
            )
            devstate.write(base, state)
            _banner(url, token_file, sample, queue, storage)
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
            wait = DRAIN_WAIT_S.get(queue.kind, DRAIN_WAIT_DURABLE_S)
            left = wait_drained(queue.url, layout.streams(), GROUP, wait)
        consumer_rc = _stop(consumer)
        queue.stop()
        storage.stop()
    if code == 0 and (ingest_rc != 0 or consumer_rc != 0):
        print(f"leviathan-cp dev: ingest exited {ingest_rc}, consumer {consumer_rc}", flush=True)
        code = 1
    print(_farewell(queue, left, private_postgres=storage.server is not None), flush=True)
    return code


def _farewell(queue: DevQueue, left: int, private_postgres: bool = False) -> str:
    """The closing line; ``left``: entries the consumer had not finished (-1: unknown)."""
    what = (
        f"stopped ingest, the consumer and the queue ({queue.kind})"
        if queue.kind != "external"
        else "stopped ingest and the consumer (the external queue keeps running)"
    )
    if private_postgres:
        what += " and PostgreSQL"
    if left == 0:
        return f"leviathan-cp dev: {what}; everything accepted is stored, nothing is lost."
    count = "an unknown number of entries" if left < 0 else f"{left} entries"
    if queue.kind == "fakeredis":
        return f"leviathan-cp dev: {what}; {count} still queued in memory were LOST."
    return (
        f"leviathan-cp dev: {what}; {count} still queued, nothing accepted is lost "
        "(the consumer stores them at the next start)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="leviathan-cp dev",
        description="Run ingest + consumer locally: a queue (LEVIATHAN_REDIS_URL, else a "
        "redis-server of its own, else an in-process one) and storage under ./.leviathan "
        "(NDJSON; PostgreSQL with LEVIATHAN_CONTROL_PLANE_BACKEND=postgres and POSTGRES_DSN, "
        "or --postgres).",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="store in a private PostgreSQL cluster under ./.leviathan/postgres (created on "
        "first use; needs the PostgreSQL server binaries installed)",
    )
    args = parser.parse_args(argv)
    return run(Path.cwd() / ".leviathan", Path.home(), private_postgres=args.postgres)
