"""asyncpg hooks of the PostgreSQL backend's pooled connections: type codecs, release.

Pipeline position: :class:`storage.postgres.store.PostgresStore` installs :func:`init_connection`
on every pooled connection (the ``init`` hook), so reads and writes of the ``json`` and
``jsonb`` columns skip asyncpg's text round trip through Python's json module, and
:func:`keep_session` as the pool's ``reset`` hook.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)  # binary jsonb wire form: version 1 + JSON text


def _jsonb_decode(data: bytes) -> Any:
    return orjson.loads(data[1:])


def _json_encode(value: Any) -> bytes:
    # bytes are JSON text serialised already (the hashed payloads): stored exactly as is
    return value if isinstance(value, bytes) else orjson.dumps(value)


async def init_connection(con: asyncpg.Connection) -> None:
    """Binary json/jsonb codecs by orjson; json's binary form is the JSON text itself,
    kept byte for byte by the server (the payload column holds the hashed bytes)."""
    await con.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog",
        format="binary",
    )  # fmt: skip
    await con.set_type_codec(
        "json", encoder=_json_encode, decoder=orjson.loads, schema="pg_catalog", format="binary"
    )


async def keep_session(con: asyncpg.Connection) -> None:
    """A connection goes back to the pool as it is (asyncpg still rolls back a transaction
    left open). asyncpg's default reset — advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL —
    was one more round trip per read (with 16 readers ~0.4 ms of the server's CPU and
    ~0.2 ms of PostgreSQL's per read, a fifth of each, bench.query --load); this store
    leaves no session state to reset: no LISTEN, no cursors outside a transaction, only
    SET LOCAL, and the one session lock (migrations) is released in a ``finally``."""
