"""The private PostgreSQL cluster of ``leviathan-cp dev --postgres``.

Pipeline position: development only, beside :mod:`leviathan_cp.devqueue`. Finds the server
binaries (``pg_config --bindir``, else ``/usr/lib/postgresql/<newest>/bin``), creates a
cluster under ``./.leviathan/postgres`` on first use (``initdb`` with a generated password
for the ``postgres`` role, kept in ``./.leviathan/postgres/password``, mode 600; password
authentication even on loopback, so another local user cannot write to it) and runs
``postgres`` on a free 127.0.0.1 port as this supervisor's child, so it stops with it.

PostgreSQL refuses to run as root. When ``dev`` runs as root the cluster belongs to the
``postgres`` system account (which the server packages create): the folder is handed to it,
``initdb`` runs through ``runuser`` and the server as that user. That account must be able
to reach the folder; a ``dev`` under ``/root`` (mode 700) cannot, and says so.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from leviathan_cp.devqueue import QueueError, wait_for_port
from leviathan_cp.ports import free_port

SERVICE_USER = "postgres"


class PostgresError(QueueError):
    """The private cluster cannot start; the message is the one line to show."""


def bindir() -> Path | None:
    """Directory holding initdb and postgres, or ``None`` when the server is not installed."""
    candidates: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=5)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)
    for path in candidates:
        if path and (Path(path) / "initdb").exists() and (Path(path) / "postgres").exists():
            return Path(path)
    return None


def _major(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


@dataclass
class DevPostgres:
    """A running private cluster; ``dsn`` reaches its ``postgres`` database."""

    dsn: str
    directory: Path
    _proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are gone by now; a checkpoint is written."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def _as_service_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SERVICE_USER, "--", *argv] if os.geteuid() == 0 else argv


def _prepare_root(directory: Path) -> None:
    """As root: the cluster belongs to the postgres account, which must reach the folder."""
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise PostgresError(
            "dev --postgres as root runs the server as the 'postgres' account, which does not "
            "exist here: run dev as a normal user, or set POSTGRES_DSN instead"
        ) from None
    shutil.chown(directory, SERVICE_USER, SERVICE_USER)
    probe = subprocess.run(
        _as_service_user(["test", "-w", str(directory)]), capture_output=True, timeout=10
    )
    if probe.returncode != 0:
        raise PostgresError(
            f"dev --postgres as root runs the server as the 'postgres' account, which cannot "
            f"reach {directory} (a parent folder such as /root is closed to it): run dev in a "
            f"folder it can reach, or as a normal user, or set POSTGRES_DSN instead"
        )


def _initdb(binaries: Path, data: Path, password_file: Path) -> None:
    password_file.write_text(secrets.token_urlsafe(24) + "\n")
    password_file.chmod(0o600)
    if os.geteuid() == 0:
        shutil.chown(password_file, SERVICE_USER, SERVICE_USER)
    argv = [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8"]
    argv += ["--auth=scram-sha-256", f"--pwfile={password_file}", "--no-instructions"]
    done = subprocess.run(_as_service_user(argv), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)  # a half-made cluster would fail every start
        last = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise PostgresError(f"initdb failed: {last[-1]}")


def start(directory: Path) -> DevPostgres:
    """Create (first run) and start the cluster under ``directory``."""
    binaries = bindir()
    if binaries is None:
        raise PostgresError(
            "dev --postgres needs the PostgreSQL server (initdb, postgres: e.g. "
            "`apt install postgresql`); or set LEVIATHAN_CONTROL_PLANE_BACKEND=postgres and "
            "POSTGRES_DSN to use a server you run"
        )
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        _prepare_root(directory)
    data, password_file = directory / "data", directory / "password"
    if not (data / "PG_VERSION").exists():
        _initdb(binaries, data, password_file)
    password = password_file.read_text().strip()
    port = free_port()
    argv = [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(directory)]
    argv += ["-c", "listen_addresses=127.0.0.1"]
    log_path = directory / "postgres.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    with log_path.open("ab") as log:
        since = log.tell()
        # Own session: the terminal's Ctrl-C reaches only the supervisor, which stops the
        # database last, after the tiers are gone.
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
            user=SERVICE_USER if os.geteuid() == 0 else None,
        )
    try:
        wait_for_port(port, proc, 30)
    except ChildProcessError:
        raise PostgresError(_failure(log_path, since)) from None
    except QueueError:
        proc.kill()
        proc.wait()
        raise PostgresError(f"postgres did not listen within 30 s (log: {log_path})") from None
    dsn = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
    return DevPostgres(dsn=dsn, directory=directory, _proc=proc)


def _failure(log_path: Path, since: int) -> str:
    try:
        with log_path.open("rb") as fh:
            fh.seek(since)
            lines = fh.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        lines = []
    fatal = [line for line in lines if "FATAL" in line] or lines or ["no reason logged"]
    return f"postgres could not start: {fatal[-1].strip()} (log: {log_path})"
