"""The machine a benchmark run measured: hardware, software versions and the code's commit.

Pipeline position: beside :mod:`bench.run_all`, which puts these lines at the top of
bench/RESULTS.md so a figure can be compared only with figures from a like machine.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any, cast

PACKAGES = ("aiohttp", "arq", "redis", "hiredis", "asyncpg", "pydantic", "orjson", "uvloop")


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({type(exc).__name__})"
    return done.stdout.strip() or f"unknown (exit {done.returncode})"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the command name: state is field 3, utime 14 and stime 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_named(command: str) -> float:
    """CPU time used so far by every live process whose command is ``command`` (e.g. the
    ``postgres`` backends serving a benchmark; 0 where /proc is missing)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        name = text[text.find("(") + 1 : text.rfind(")")]
        if name == command:
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def memory_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def redis_server(redis_url: str) -> str:
    """The server's own answer (the one the benchmarks talk to), else the local binary's."""
    import redis

    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            server = cast("dict[str, Any]", client.info("server"))
            return f"Redis {server['redis_version']}"
        finally:
            client.close()
    except redis.RedisError:
        return _run(["redis-server", "--version"]).split(" sha=")[0]


def postgres_server(admin_dsn: str) -> str:
    import asyncio

    import asyncpg

    async def ask() -> str:
        con = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            return str(await con.fetchval("SHOW server_version"))
        finally:
            await con.close()

    try:
        return asyncio.run(ask())
    except (OSError, asyncpg.PostgresError) as exc:
        return f"unknown ({type(exc).__name__})"


def git_commit(root: Path) -> str:
    commit = _run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root)
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    return commit + (" with uncommitted changes" if dirty and "unknown" not in dirty else "")


def describe(root: Path, redis_url: str, admin_dsn: str) -> list[str]:
    """Markdown bullet lines."""
    uname = platform.uname()
    return [
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores, memory {memory_gib():.1f} GiB",
        f"- kernel: {uname.system} {uname.release} ({uname.machine}); "
        f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        "- packages: " + ", ".join(f"{p} {version(p)}" for p in PACKAGES),
        f"- servers: {redis_server(redis_url)}; PostgreSQL {postgres_server(admin_dsn)}",
        f"- code: commit {git_commit(root)}",
    ]
