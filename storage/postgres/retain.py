"""Retention of the PostgreSQL backend: delete each partition's chain prefix in batches.

Pipeline position: ``PostgresStore.retain`` (``leviathan-cp retain``, the consumer's
maintenance). Per partition, one short transaction per batch: read the next ``batch``
events past the checkpoint in ``seq`` order (an index range scan), keep the leading run
that arrived before the cut (:func:`storage.retention.prefix_end`), delete those rows and
move ``chain_checkpoints`` to the last of them, then pause as long as the batch took.
Writers insert at the head of the chain
and take the partition's advisory lock; this touches neither, so they never wait for
it (measured in tests/lifecycle/test_retention.py: the drain rate while it runs).

Batched deletes rather than a table partitioned by arrival time: dropping partitions
would be cheaper per row, but turning ``events`` into a partitioned table means a new
primary key (the partition key must be in every unique key, ``(event_id, revision)``
included) and a rewrite of every existing deployment's largest table; deletes of a few
thousand rows per transaction keep the writers' throughput (see the test) and the space
is reused by autovacuum.
"""

from __future__ import annotations

import asyncpg

from storage.base import LogStat
from storage.chain import Checkpoint
from storage.retention import arrival, prefix_end


async def checkpoint(con: asyncpg.Connection, partition: int) -> Checkpoint | None:
    row = await con.fetchrow(
        "SELECT seq, hash, received_at FROM chain_checkpoints WHERE partition = $1", partition
    )
    return None if row is None else Checkpoint(int(row["seq"]), row["hash"], row["received_at"])


async def checkpoints(con: asyncpg.Connection) -> dict[int, Checkpoint]:
    rows = await con.fetch("SELECT partition, seq, hash, received_at FROM chain_checkpoints")
    return {
        int(r["partition"]): Checkpoint(int(r["seq"]), r["hash"], r["received_at"]) for r in rows
    }


async def step(
    con: asyncpg.Connection, partition: int, before: float, batch: int
) -> tuple[int, Checkpoint, bool] | None:
    """One batch in one transaction: ``(removed, checkpoint, whole batch)``; None: nothing."""
    async with con.transaction():
        found = await con.fetchrow(
            "SELECT seq FROM chain_checkpoints WHERE partition = $1 FOR UPDATE", partition
        )
        after = int(found["seq"]) if found is not None else 0
        # only what the cut needs: decoding payloads here would cost the writers CPU
        rows = await con.fetch(
            "SELECT seq, hash, received_at FROM events WHERE partition = $1 AND seq > $2 "
            "ORDER BY seq LIMIT $3",
            partition,
            after,
            batch,
        )
        last, count = prefix_end(rows, before)
        if last is None:
            return None
        await con.execute("SET LOCAL leviathan.retention = 'on'")
        await con.execute(
            "DELETE FROM events WHERE partition = $1 AND seq > $2 AND seq <= $3",
            partition,
            after,
            last["seq"],
        )
        await con.execute(
            "INSERT INTO chain_checkpoints(partition, seq, hash, received_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (partition) DO UPDATE SET seq = excluded.seq, "
            "hash = excluded.hash, received_at = excluded.received_at",
            partition,
            last["seq"],
            last["hash"],
            last["received_at"],
        )
        point = Checkpoint(int(last["seq"]), last["hash"], last["received_at"])
        return count, point, count == len(rows)


async def partitions(con: asyncpg.Connection) -> list[int]:
    rows = await con.fetch("SELECT partition FROM heads WHERE seq > 0 ORDER BY 1")
    return [int(r["partition"]) for r in rows]


async def log_stats(con: asyncpg.Connection) -> list[LogStat]:
    stats = []
    for head in await con.fetch("SELECT partition, seq FROM heads ORDER BY 1"):
        partition = int(head["partition"])
        found = await checkpoint(con, partition)
        start = found.seq if found else 0
        first = await con.fetchval(
            "SELECT received_at FROM events WHERE partition = $1 AND seq > $2 ORDER BY seq LIMIT 1",
            partition,
            start,
        )
        oldest = None if first is None else arrival(first)
        stats.append(LogStat(partition, int(head["seq"]) - start, None, oldest))
    return stats
