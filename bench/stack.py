"""A private control-plane stack for end-to-end benchmarks (bench/stack_load.py, bench/soak.py,
bench/readers.py).

Pipeline position: wraps the whole pipeline. Starts its own ``redis-server`` (temp dir, AOF
everysec, free port), creates a throwaway database on the given PostgreSQL server, and runs
the real ``python -m ingest`` and ``python -m consumer`` processes against them (and, on
request, more tiers: :meth:`Stack.add_tier`), so a bench run never touches the shared Redis
databases. Peak RSS comes from ``VmHWM`` in /proc.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import aiohttp

from bench import scratchdb
from leviathan_cp.ports import free_port


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size of a live process (kernel's high-water mark), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _wait_http(url: str, deadline_s: float, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + deadline_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {deadline_s} s")


class Stack:
    """Context manager: redis + fresh PG database + ingest + consumer on loopback."""

    def __init__(self, admin_dsn: str, token: str = "bench-token") -> None:
        self.admin_dsn = admin_dsn
        self.token = token
        self.tmp = Path(tempfile.mkdtemp(prefix="leviathan-bench-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env: dict[str, str] = {}
        self.api_port = free_port()
        self.partitions = 8
        self.dsn = ""  # the scratch database, once entered

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    async def __aenter__(self) -> Stack:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _start(self) -> None:
        redis_port = free_port()
        self._spawn(
            "redis",
            [
                "redis-server",
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.tmp),
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ],
            dict(os.environ),
        )
        self.dsn = await scratchdb.create(self.admin_dsn, "stack")
        env = {
            **os.environ,
            "LEVIATHAN_CONTROL_PLANE_TOKEN": self.token,
            "LEVIATHAN_CONTROL_PLANE_BACKEND": "postgres",
            "POSTGRES_DSN": self.dsn,
            "LEVIATHAN_PARTITIONS": str(self.partitions),
            "LEVIATHAN_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "LEVIATHAN_API_HOST": "127.0.0.1",
            "LEVIATHAN_API_PORT": str(self.api_port),
            "LEVIATHAN_CONSUMER_HOST": "127.0.0.1",
            "LEVIATHAN_CONSUMER_PORT": str(free_port()),
        }
        self.env = env
        await asyncio.sleep(0.3)
        self._spawn("ingest", [sys.executable, "-m", "leviathan_cp", "ingest"], env)
        self._spawn("consumer", [sys.executable, "-m", "consumer"], env)
        try:
            await _wait_http(f"{self.url}/readyz", 30, self.procs["ingest"])
        except RuntimeError as exc:
            tail = self.log_tail("ingest", 5)
            raise RuntimeError(f"{exc}; ingest log:\n{tail}") from None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    async def add_tier(self, name: str, command: str, **env: str) -> str:
        """One more ``leviathan-cp COMMAND`` process (a second ingest, the query tier) on the
        stack's Redis and database, on a port of its own; its base URL once ready."""
        port = free_port()
        argv = [sys.executable, "-m", "leviathan_cp", command]
        self._spawn(name, argv, {**self.env, "LEVIATHAN_API_PORT": str(port), **env})
        url = f"http://127.0.0.1:{port}"
        try:
            await _wait_http(f"{url}/readyz", 30, self.procs[name])
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; {name} log:\n{self.log_tail(name, 5)}") from None
        return url

    def loadgen_argv(
        self, workers: int, seconds: float, *extra: str, url: str | None = None
    ) -> list[str]:
        """``leviathan-cp bench`` arguments aimed at this stack's ingest (or at ``url``, another
        ingest process of it), quiet: no live line."""
        return [
            "--url",
            url or self.url,
            "--token",
            self.token,
            "--workers",
            str(workers),
            "--duration",
            str(seconds),
            "--quiet",
            *extra,
        ]

    def peaks(self) -> dict[str, float]:
        return {n: round(peak_rss_mib(p.pid), 1) for n, p in self.procs.items() if p.poll() is None}

    def log_tail(self, name: str, lines: int = 20) -> str:
        text = (self.tmp / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        # every tier before the Redis they drain into
        for name in [*(n for n in self.procs if n != "redis"), "redis"]:
            proc = self.procs.get(name)
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        try:
            if self.dsn:
                await scratchdb.drop(self.admin_dsn, self.dsn)
        except OSError:
            pass  # the server went away; nothing left to drop
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
