"""The queue of ``leviathan-cp dev``: an existing Redis, a local redis-server, or fakeredis.

Pipeline position: development only. Chooses, in order, ``LEVIATHAN_REDIS_URL`` (used as
is, once it answers a PING), a ``redis-server`` found on PATH (started on a free loopback
port with AOF under ``./.leviathan/redis`` so a Ctrl-C loses nothing), or fakeredis'
in-process TCP server. A queue that cannot start is a :class:`QueueError` whose message
is one line naming the URL or file and the fix (the server's own log says why, and is
named too).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from leviathan_cp.ports import free_port

AOF_MANIFEST = Path("appendonlydir") / "appendonly.aof.manifest"


class QueueError(Exception):
    """The queue cannot start; the message is the one line to show."""


def redact(url: str) -> str:
    """``url`` without its password (safe to print)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def check_reachable(url: str, timeout: float = 3.0) -> None:
    """PING the Redis at ``url`` (``LEVIATHAN_REDIS_URL``), or raise :class:`QueueError`."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    except ValueError as exc:
        raise QueueError(
            f"LEVIATHAN_REDIS_URL={redact(url)} is not a Redis URL ({exc}); "
            "fix it, or unset it to let dev start its own queue"
        ) from None
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise QueueError(
            f"LEVIATHAN_REDIS_URL={redact(url)} cannot be reached ({type(exc).__name__}: "
            f"{exc}); start that Redis, or unset the variable to let dev start its own queue"
        ) from None
    finally:
        client.close()


def _server_failure(log_path: Path, since: int, redis_dir: Path) -> str:
    """One line for a redis-server that exited at start, from what it logged this time."""
    try:
        with open(log_path, "rb") as fh:
            fh.seek(since)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    # redis log lines: "pid:role date time <level> message"; '#' marks warnings
    warnings = [m.group(1) for m in re.finditer(r"^\S+ .*? # (.*)$", text, re.MULTILINE)]
    if any("append only file" in w for w in warnings):
        manifest = redis_dir / AOF_MANIFEST
        return (
            f"the queue's append-only file under {redis_dir} is damaged (a second redis-server "
            f"on the same files, or a crash): run `redis-check-aof --fix {manifest}`, or move "
            f"{redis_dir} away to start with an empty queue (details: {log_path})"
        )
    why = warnings[-1] if warnings else "no reason logged"
    return f"redis-server could not start: {why} (log: {log_path})"


def _refuse_leftover(pidfile: Path, redis_dir: Path) -> None:
    """A redis-server from an earlier ``dev`` that was killed may still append to the AOF;
    a second server on the same files would damage it."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return  # no pidfile, or that process is gone
    if b"redis-server" in cmdline:
        raise QueueError(
            f"a redis-server left by an earlier dev (pid {pid}) still uses {redis_dir}: "
            f"stop it (kill {pid}) and start dev again"
        )


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes] | None, timeout: float, ping: bool = False
) -> None:
    """Wait until ``port`` accepts connections; with ``ping``, until Redis answers PONG.

    redis-server listens before it loads its append-only file, and exits if the file is
    damaged: a connection alone does not mean the queue is up.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ChildProcessError(proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if not ping:
                    return
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise QueueError(f"the queue did not answer on 127.0.0.1:{port} within {timeout:.0f} s")


@dataclass
class DevQueue:
    """A running queue; ``kind`` is ``external``, ``redis-server`` or ``fakeredis``."""

    url: str
    kind: str
    _proc: subprocess.Popen[bytes] | None = None
    _server: Any = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            # SIGTERM makes redis-server fsync the AOF before it exits.
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


async def queued(url: str, streams: list[str], group: str) -> int:
    """Entries of ``streams`` that ``group`` has not finished: undelivered plus pending.

    The undelivered part is :func:`storage.lag.lag_of`, which checks Redis' lag counter
    against the stream (after an AOF reload the counter can report hundreds of entries over
    empty streams); a stream or group not there yet holds nothing for this group.
    """
    from redis.asyncio import Redis

    from storage.lag import group_row, lag_of

    client = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        total = 0
        for stream in streams:
            row = await group_row(client, stream, group)
            if row is not None:
                total += await lag_of(client, stream, row) + int(row.get("pending") or 0)
        return total
    finally:
        await client.aclose()


def wait_drained(
    url: str, streams: list[str], group: str, timeout: float, stalled_after: float = 5.0
) -> int:
    """Wait until the consumer has finished every entry; return how many remain (0: drained).

    Called after ingest stopped and before the consumer is, so an in-memory queue (fakeredis)
    is only discarded once everything accepted is in storage. Gives up after ``timeout`` s,
    or once the count has not gone down for ``stalled_after`` s (a consumer that stopped
    making progress will not drain it); an unreachable queue counts as unknown (-1).
    """
    import asyncio

    import redis

    deadline = time.monotonic() + timeout
    best, best_at = -1, time.monotonic()
    while True:
        try:
            left = asyncio.run(queued(url, streams, group))
        except (redis.RedisError, OSError):
            return -1
        now = time.monotonic()
        if left == 0:
            return 0
        if best < 0 or left < best:
            best, best_at = left, now
        if now >= deadline or now - best_at >= stalled_after:
            return left
        time.sleep(0.2)


def start_queue(env_url: str | None, redis_dir: Path) -> DevQueue:
    if env_url:
        check_reachable(env_url)
        return DevQueue(url=env_url, kind="external")
    binary = shutil.which("redis-server")
    port = free_port()
    if binary is not None:
        redis_dir.mkdir(parents=True, exist_ok=True)
        pidfile = redis_dir / "redis.pid"
        _refuse_leftover(pidfile, redis_dir)
        args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(redis_dir)]
        args += ["--pidfile", str(pidfile)]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        args += ["--maxmemory-policy", "noeviction", "--daemonize", "no"]
        log_path = redis_dir / "redis.log"
        log = log_path.open("ab")
        since = log.tell()
        # Own session: the terminal's Ctrl-C reaches only the supervisor, which stops the
        # queue last, after the tiers have drained into it.
        proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        try:
            # a big append-only file takes a while to load (Redis answers LOADING meanwhile)
            wait_for_port(port, proc, 120, ping=True)
        except ChildProcessError:
            raise QueueError(_server_failure(log_path, since, redis_dir)) from None
        except QueueError:
            proc.kill()
            proc.wait()
            raise
        return DevQueue(url=f"redis://127.0.0.1:{port}/0", kind="redis-server", _proc=proc)
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    wait_for_port(port, None, 5)
    return DevQueue(
        url=f"redis://127.0.0.1:{port}/0", kind="fakeredis", _server=server, _thread=thread
    )
