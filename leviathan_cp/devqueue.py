"""The queue of ``leviathan-cp dev``: an existing Redis, a local redis-server, or fakeredis.

Pipeline position: development only. Chooses, in order, ``LEVIATHAN_REDIS_URL`` (used as
is), a ``redis-server`` found on PATH (started on a free loopback port with AOF under
``./.leviathan/redis`` so a Ctrl-C loses nothing), or fakeredis' in-process TCP server.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"queue did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


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


def wait_drained(url: str, streams: list[str], group: str, timeout: float) -> bool:
    """True once every stream's group has no lag and no pending entries (consumer caught up).

    Called after ingest stopped and before the consumer is, so an in-memory queue (fakeredis)
    is only discarded once everything accepted is in storage.
    """
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if all(_group_idle(client, stream, group) for stream in streams):
                return True
            time.sleep(0.2)
        return False
    finally:
        client.close()


def _group_idle(client: Any, stream: str, group: str) -> bool:
    try:
        groups = client.xinfo_groups(stream)
    except Exception:
        return True
    for info in groups:
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if name == group:
            return int(info.get("pending") or 0) == 0 and int(info.get("lag") or 0) == 0
    return False


def start_queue(env_url: str | None, redis_dir: Path) -> DevQueue:
    if env_url:
        return DevQueue(url=env_url, kind="external")
    binary = shutil.which("redis-server")
    port = free_port()
    if binary is not None:
        redis_dir.mkdir(parents=True, exist_ok=True)
        args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(redis_dir)]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
        args += ["--maxmemory-policy", "noeviction", "--daemonize", "no"]
        log = (redis_dir / "redis.log").open("ab")
        # Own session: the terminal's Ctrl-C reaches only the supervisor, which stops the
        # queue last, after the tiers have drained into it.
        proc = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        _wait_for_port(port, proc, 10)
        return DevQueue(url=f"redis://127.0.0.1:{port}/0", kind="redis-server", _proc=proc)
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True)
    thread.start()
    _wait_for_port(port, None, 5)
    return DevQueue(
        url=f"redis://127.0.0.1:{port}/0", kind="fakeredis", _server=server, _thread=thread
    )
