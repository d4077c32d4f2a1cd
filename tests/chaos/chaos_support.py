"""Processes the chaos suite starts, kills and restarts: its own Redis, its own PostgreSQL
cluster, and the real ``python -m ingest`` / ``python -m consumer`` tiers.

Pipeline position: wraps the whole pipeline (client → ingest → Redis → consumer → storage)
so a scenario can take one piece away under load. Nothing here touches the shared Redis or
the shared PostgreSQL server: each scenario gets a private ``redis-server`` on a free port
and a throwaway database (scenario 3 even a private cluster, because stopping the shared
server would break everyone else's tests).

Every child is spawned from the main thread with ``PR_SET_PDEATHSIG`` = SIGKILL, so it dies
with the test process even if pytest itself is killed and no finalizer runs; the fixtures in
``conftest.py`` stop everything in the normal and the failing case.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from leviathan_cp.ports import free_port
from tests.consumer.process_support import ROOT

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child after fork (and after any setuid), before exec.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Child:
    """One long-running child process with its output appended to ``log``."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.name, self.argv, self.log, self.env = name, argv, log, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None  # run as this user and its group (root only)

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} still runs"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=self.user,
                group=self.user,
                extra_groups=[] if self.user else None,
                preexec_fn=_die_with_parent,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, seconds: float) -> int:
        assert self.proc is not None
        return self.proc.wait(seconds)

    def kill(self) -> None:
        """SIGKILL and reap (a no-op when it already exited)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, seconds: float = 20) -> int | None:
        """SIGTERM, then SIGKILL after ``seconds``; the exit code of the SIGTERM, if any."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.terminate()
        try:
            return self.proc.wait(seconds)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def wait_port(port: int, seconds: float, child: Child, ping: bytes | None = None) -> None:
    """Until 127.0.0.1:``port`` accepts TCP (and answers ``ping`` with ``+PONG`` when given,
    i.e. Redis has finished loading its AOF); fails early if ``child`` died."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not child.alive:
            raise RuntimeError(f"{child.name} exited early:\n{child.tail()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5) as s:
            if ping is None:
                return
            s.sendall(ping)
            if s.recv(64).startswith(b"+PONG"):
                return
        time.sleep(0.05)
    raise RuntimeError(f"{child.name} not ready on {port} after {seconds} s")


class RedisServer:
    """A private ``redis-server`` with AOF on a temp dir, restartable on the same port.

    ``appendfsync always``: Redis writes and fsyncs the AOF before it answers a write, so an
    XADD that ingest acknowledged with 202 survives even a SIGKILL of Redis. With
    ``everysec`` (the compose default) a crash may drop the last second of acknowledged
    XADDs; that is the documented durability trade-off of the deployment, not a bug this
    suite should report, so the crash-restart here uses the policy under which "202 means
    durable in the queue" is a promise Redis actually keeps.
    """

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(workdir), "--appendonly", "yes", "--appendfsync", "always"]
        argv += ["--save", "", "--daemonize", "no"]
        self.child = Child("redis", argv, workdir / "redis.log", dict(os.environ))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.child.start()
        wait_port(self.port, 10, self.child, ping=b"PING\r\n")

    def crash(self) -> None:
        self.child.kill()


def pg_bindir() -> Path | None:
    """Directory of initdb/pg_ctl/postgres: ``pg_config --bindir``, else the Debian layout."""
    candidates: list[str] = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=5)
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for path in candidates:
        if path and (Path(path) / "initdb").exists():
            return Path(path)
    return None


class PgCluster:
    """A private PostgreSQL cluster (initdb on a temp dir) that can be stopped and started.

    As root the server must run as ``postgres`` (it refuses root), so initdb goes through
    ``runuser`` and the postmaster is spawned with ``user="postgres"``. The postmaster is
    our direct child rather than ``pg_ctl start``'s grandchild so that it inherits
    PDEATHSIG; stopping uses ``pg_ctl stop -m fast`` as an operator would.
    """

    def __init__(self, bindir: Path, workdir: Path) -> None:
        self.bindir, self.workdir = bindir, workdir
        self.data = workdir / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        argv = [str(bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        argv += ["-k", str(workdir), "-c", "listen_addresses=127.0.0.1"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.child = Child("postgres", argv, workdir / "postgres.log", env)
        if self.as_root:
            self.child.user = "postgres"

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, argv: list[str]) -> None:
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=self.child.env)
        if done.returncode != 0:
            raise RuntimeError(f"{argv} failed: {done.stdout}{done.stderr}")

    def init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.workdir, "postgres", "postgres")
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "--auth=trust"]
        self._run([*initdb, "-U", "postgres", "--no-sync", "-E", "UTF8"])

    def start(self) -> None:
        self.child.start()
        wait_port(self.port, 30, self.child)

    def stop(self) -> None:
        """Fast shutdown (clients disconnected, checkpoint written), bounded in time."""
        if not self.child.alive:
            return
        try:
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"])
            self.child.wait(30)
        except (RuntimeError, subprocess.SubprocessError):
            self.child.kill()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def tier_argv(module: str) -> list[str]:
    """The command of a tier's process; ingest as ``leviathan-cp ingest`` serves reads too."""
    if module == "ingest":
        return [sys.executable, "-m", "leviathan_cp", "ingest"]
    return [sys.executable, "-m", module]
