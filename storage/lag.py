"""A consumer group's lag that stays true when Redis' own counter does not.

Pipeline position: shared by ingest's backpressure (``ingest.backpressure``) and the
consumer's lag metric (``consumer.maintenance.record_lag``); both read the ``writers``
group of one partition stream at a time (a cluster rejects cross-slot commands).

XINFO GROUPS reports ``lag`` = entries-added - entries-read, and those counters can lie: an
AOF repair, an XSETID or a deleted entry leaves them inconsistent (a dev stack showed lag
2,909 over empty streams whose group had delivered everything), or Redis reports null.
So a non-zero or null lag is checked against the stream: a group whose last-delivered id
reached the stream's last entry is caught up (lag 0); otherwise the lag is at most the
entries in the stream that are not pending (``XLEN - pending``; undelivered entries are
never trimmed), and that count replaces a null or larger counter.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from storage.queue import GROUP, resolve
from storage.redisconn import is_missing


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def group_row(redis: Redis, stream: str, group: str = GROUP) -> dict[str, Any] | None:
    """XINFO GROUPS row of ``group`` (None if the stream or the group is missing)."""
    try:
        rows = await resolve(redis.xinfo_groups(stream))
    except ResponseError as exc:
        if is_missing(exc):
            return None
        raise
    for row in rows:
        if _text(row["name"]) == group:
            return dict(row)
    return None


async def lag_of(redis: Redis, stream: str, row: dict[str, Any]) -> int:
    """Entries of ``stream`` not yet delivered to the group whose XINFO row is ``row``."""
    reported = row.get("lag")
    if reported is not None and int(reported) == 0:
        return 0
    last = _text(row["last-delivered-id"])
    after = await resolve(redis.xrange(stream, min=f"({last}", max="+", count=1))
    if not after:
        return 0  # delivered up to the last entry, whatever the counter says
    undelivered_max = max(int(await resolve(redis.xlen(stream))) - int(row["pending"]), 1)
    if reported is None or not 0 < int(reported) <= undelivered_max:
        return undelivered_max
    return int(reported)


async def stream_lag(redis: Redis, stream: str, group: str = GROUP) -> int:
    """Lag of ``group`` on ``stream``; the whole stream while the group does not exist."""
    row = await group_row(redis, stream, group)
    if row is None:
        return int(await resolve(redis.xlen(stream)))  # 0 for a stream not there yet
    return await lag_of(redis, stream, row)
