"""The forwarder's stream operations on one partition: its group, reads, acks, skips.

Pipeline position: Redis side of consumer.forwarder. The forwarder reads every partition
with a consumer group of its own (``LEVIATHAN_SPIDER_GROUP``, default ``spider``), so the
storage writers (group ``writers``) neither wait for it nor see its acks. Every command
here names one partition's keys only (its stream, its ``spider-dead`` stream), all under
the partition's hash tag, so the dead-letter move and its XACK are one MULTI.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError

from consumer import deadletter
from storage.queue import StreamLayout, resolve
from storage.redisconn import atomic

SKIP_CHUNK = 1000
STATUS = b"dead_status"
BODY = b"dead_body"

Entry = tuple[str, dict[bytes, bytes]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class PartitionStream:
    """One partition as the forwarder's consumer ``consumer`` in group ``group`` sees it."""

    redis: Redis
    layout: StreamLayout
    partition: int
    group: str
    consumer: str
    dead_keep: int
    """The spider-dead stream is capped at about this many entries (MAXLEN ~)."""

    @property
    def stream(self) -> str:
        return self.layout.stream(self.partition)

    async def ensure_group(self, start: str) -> None:
        """Create the group once: at ``0`` (``earliest``: everything still in the stream,
        already trimmed entries cannot be had) or at ``$`` (``latest``: from now on)."""
        first = "0" if start == "earliest" else "$"
        try:
            await resolve(
                self.redis.xgroup_create(self.stream, self.group, id=first, mkstream=True)
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim_all(self) -> None:
        """Make every pending entry of the group ours (a previous lease holder's, after it
        died), ids only; they are re-read in id order from our pending list."""
        low = "-"
        while True:
            rows = await resolve(
                self.redis.xpending_range(self.stream, self.group, min=low, max="+", count=500)
            )
            theirs: list[Any] = [
                _text(r["message_id"]) for r in rows if _text(r["consumer"]) != self.consumer
            ]
            if theirs:
                claim = self.redis.xclaim(
                    self.stream, self.group, self.consumer, 0, theirs, justid=True
                )
                await resolve(claim)
            if len(rows) < 500:
                return
            low = "(" + _text(rows[-1]["message_id"])

    async def forget_idle_consumers(self, idle_ms: int) -> None:
        """Delete group members with nothing pending that have not read for ``idle_ms``
        (consumer pods come and go; only the lease holder reads, the rest would pile up)."""
        for row in await resolve(self.redis.xinfo_consumers(self.stream, self.group)):
            name = _text(row["name"])
            if name != self.consumer and int(row["pending"]) == 0 and int(row["idle"]) > idle_ms:
                await resolve(self.redis.xgroup_delconsumer(self.stream, self.group, name))

    async def destroy_group(self) -> bool:
        """Remove the group (and the partition's lease): forwarding switched off for good."""
        await resolve(self.redis.delete(self.layout.spider_lease(self.partition)))
        try:
            return bool(await resolve(self.redis.xgroup_destroy(self.stream, self.group)))
        except ResponseError:  # no such stream
            return False

    async def read(self, cursor: str, count: int, block_ms: int) -> tuple[list[Entry], list[str]]:
        """One XREADGROUP: (entries, ids of pending entries that no longer exist)."""
        reply = await resolve(
            self.redis.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: cursor},
                count=count,
                block=None if cursor != ">" else block_ms,
            )
        )
        entries: list[Entry] = []
        gone: list[str] = []
        for entry_id, fields in reply[0][1] if reply else []:
            # trimmed while pending: nothing left to send (redis-py gives Redis' nil as {},
            # and an entry always has a field)
            if not fields:
                gone.append(_text(entry_id))
            else:
                entries.append((_text(entry_id), fields))
        return entries, gone

    async def ack(self, ids: Sequence[str]) -> None:
        if ids:
            await resolve(self.redis.xack(self.stream, self.group, *ids))

    async def trimmed_unread(self) -> tuple[int, str, int | None]:
        """Entries trimmed from the stream before the group read them (a gap the next
        ``XREADGROUP >`` would jump silently), the group's last-delivered id, and the
        backlog once the gap is written off: entries not yet forwarded, pending plus
        undelivered.

        From one snapshot (MULTI) of the group's ``lag`` and the stream's length: ``lag``
        counts every entry added after the group's position, trimmed or not (Redis 7), so
        when it exceeds all the entries the stream still holds, the difference is gone
        unread (trimming removes a prefix: with any entry up to the group's position left,
        none after it can be gone). The gap is then written off with ``XGROUP SETID …
        ENTRIESREAD`` so the lag is true again and nothing is counted twice. No gap is
        counted when Redis cannot tell (no lag: before Redis 7, or entries deleted with
        XDEL); the backlog is None then, and while the group does not exist.
        """

        def fill(pipe: Pipeline) -> None:
            pipe.xinfo_groups(self.stream)
            pipe.xlen(self.stream)

        try:
            rows, length = await atomic(self.redis, self.stream, fill)
        except ResponseError:
            return 0, "", None  # no stream yet
        row = next((r for r in rows if _text(r["name"]) == self.group), None)
        if row is None or row.get("lag") is None:
            return 0, "", None
        lag, last = int(row["lag"]), _text(row["last-delivered-id"])
        gap = lag - int(length)
        if gap <= 0 or row.get("entries-read") is None:
            return 0, last, int(row["pending"]) + lag
        read = int(row["entries-read"]) + gap
        await resolve(self.redis.xgroup_setid(self.stream, self.group, last, entries_read=read))
        return gap, last, int(row["pending"]) + lag - gap

    async def skip_oldest(self, count: int) -> tuple[int, str, str]:
        """Ack the ``count`` oldest unsent entries without sending them: our pending ones
        first (they are the oldest), then undelivered ones. Returns (skipped, first, last id)."""
        skipped: list[str] = []
        rows = await resolve(
            self.redis.xpending_range(self.stream, self.group, min="-", max="+", count=count)
        )
        ids = [_text(r["message_id"]) for r in rows]
        await self.ack(ids)
        skipped += ids
        while len(skipped) < count:
            reply = await resolve(
                self.redis.xreadgroup(
                    self.group,
                    self.consumer,
                    {self.stream: ">"},
                    count=min(count - len(skipped), SKIP_CHUNK),
                )
            )
            ids = [_text(i) for i, _ in (reply[0][1] if reply else [])]
            if not ids:
                break
            await self.ack(ids)
            skipped += ids
        return len(skipped), (skipped[0] if skipped else ""), (skipped[-1] if skipped else "")

    async def dead_letter(
        self,
        entry_id: str,
        fields: dict[bytes, bytes],
        reason: str,
        status: int | None = None,
        body: bytes = b"",
    ) -> None:
        """Move a refused entry to ``{prefix}:spider-dead:{p}`` with Spider's answer and
        ack it, in one MULTI."""
        letter = deadletter.for_entry(self.partition, entry_id, fields, reason)
        out = dict(letter.fields)
        out[STATUS] = b"" if status is None else str(status).encode()
        out[BODY] = body
        dead = self.layout.spider_dead(self.partition)

        def fill(pipe: Pipeline) -> None:
            pipe.xadd(dead, out, maxlen=self.dead_keep, approximate=True)  # type: ignore[arg-type]
            pipe.xack(self.stream, self.group, entry_id)

        await atomic(self.redis, self.stream, fill)  # same hash tag: one slot
