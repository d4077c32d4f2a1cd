"""Versioned schema migrations of the PostgreSQL backend.

Pipeline position: run by :meth:`storage.postgres.store.PostgresStore.open` in every consumer and
ingest process, and by ``leviathan-cp migrate`` through :func:`migrate`. Files
``storage/postgres/migrations/NNNN_name.sql`` (package data) are applied in name order, each in its
own transaction, and recorded in ``schema_migrations``; a session advisory lock makes
several processes starting together apply each file exactly once.
"""

from __future__ import annotations

from importlib import resources

import asyncpg

from storage.base import StorageUnavailable, describe

# What "the server cannot be reached now" looks like through asyncpg; callers retry on
# StorageUnavailable (asyncpg raises bare OSError subclasses for refused connections).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    # refused at connect: no such database, bad credentials. Unavailable until an operator
    # fixes the DSN or creates the database; consumers keep retrying, admin commands say so.
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)


def unavailable(exc: BaseException) -> StorageUnavailable:
    return StorageUnavailable(f"PostgreSQL unavailable: {describe(exc)}")


# Arbitrary constant ("LVTM"); distinct from the per-partition write locks' key space.
MIGRATION_LOCK_KEY = 0x4C56544D


def available() -> list[tuple[str, str]]:
    """``(version, sql)`` of every packaged migration, in order."""
    folder = resources.files("storage.postgres").joinpath("migrations")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


async def apply(con: asyncpg.Connection) -> list[str]:
    """Apply the pending migrations on ``con``; returns the versions applied now."""
    await con.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await con.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await con.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for version, sql in available():
            if version in done:
                continue
            async with con.transaction():
                await con.execute(sql)
                await con.execute("INSERT INTO schema_migrations(version) VALUES ($1)", version)
            applied.append(version)
        return applied
    finally:
        await con.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def migrate(dsn: str) -> list[str]:
    """Bring the database at ``dsn`` up to date (``leviathan-cp migrate``)."""
    try:
        con = await asyncpg.connect(dsn)
    except CONNECTION_ERRORS as exc:
        raise unavailable(exc) from exc
    try:
        return await apply(con)
    finally:
        await con.close()
