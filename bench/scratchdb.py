"""Scratch PostgreSQL databases for the benchmarks: a new name for each run, dropped after.

Pipeline position: beside the pipeline. A benchmark seeds a database of its own on the
server it is pointed at and drops it when it ends, so it never touches a database it did
not create: not a user's, not another benchmark run's, not the test suite's (which runs
the benchmarks at small sizes on the same server).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg


async def create(admin_dsn: str, label: str = "bench") -> str:
    """The DSN of a new database ``lvt_<label>_<random>`` on ``admin_dsn``'s server."""
    name = f"lvt_{label}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    parts = urlsplit(admin_dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


async def drop(admin_dsn: str, dsn: str) -> None:
    """Drop the database :func:`create` made for ``dsn``."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{urlsplit(dsn).path[1:]}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_database(admin_dsn: str, label: str = "bench") -> AsyncIterator[str]:
    """:func:`create`, then :func:`drop` however the block ends."""
    dsn = await create(admin_dsn, label)
    try:
        yield dsn
    finally:
        await drop(admin_dsn, dsn)
