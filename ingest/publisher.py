"""Group-commit publisher: many requests' XADDs in one Redis round trip (docs/design-notes.md).

Pipeline position: the handler hands a validated envelope to :meth:`Publisher.publish`
and awaits its own future; one background task drains everything pending (up to
``max_batch`` commands) into ONE write of pipelined XADDs on the publisher's own
connection, reads the replies in order, then resolves each future with its entry id or
the error. Under load this turns N round trips into a few; at low load a request pays one
round trip as before. A publisher that is not running answers :class:`Unavailable` at
once instead of letting requests hang.

What a batch costs is paid once per batch, so under load the drain task lets the event
loop run one more pass before taking a batch (requests whose bodies arrived in the same
read join it), and its connection carries no per-command timers (see :meth:`_connection`).
Both measured with ``bench.ingest`` (20-event bundles, 16 connections): batches of ~8
XADDs grew to ~12 and accepted events/s by 5-9%.

A bundle split into several entries (:meth:`Publisher.publish_atomic`) rides in the same
pipeline as ``MULTI``, its XADDs to the one partition stream, ``EXEC``: all of them or none
are added (Redis refuses a transaction whose commands failed to queue, an out-of-memory
refusal among them).

Two deadlines, because a 503 promises that nothing was queued: connecting (and the PING
after a long idle) is bounded by ``timeout`` (``LEVIATHAN_REDIS_TIMEOUT_SECONDS``) and a
failure there is a 503 for the batch — nothing of it was written. Once the pipeline is
being written, Redis may add any of its XADDs, so the batch then waits for its replies up
to ``reply_wait`` (``LEVIATHAN_REDIS_REPLY_WAIT_SECONDS``, plus its bytes at
:data:`MIN_BYTES_PER_SECOND`): a Redis stalled by a busy script, a fork or a slow disk
answers late, and its requests get their 202. Only past that wait, or when the connection
is lost after the write, is the outcome unknown: those requests get 504
(:class:`webcore.errors.Unconfirmed`, "may or may not be queued"; a retry is safe, storage
keeps each ``event_id`` once), never a 503. Requests still pending behind such a batch were
never written: they get 503.

With ``min_replica_acks`` (``LEVIATHAN_REDIS_MIN_REPLICA_ACKS``) each pipeline ends in
``WAIT n timeout``: its requests get their entry ids only once n replicas hold them, else a
503 (a retry is safe: storage keeps each ``event_id`` once). On a Redis Cluster one
publisher like this runs per master (``ingest.cluster_publisher``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import OutOfMemoryError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from webcore.errors import Unavailable, Unconfirmed

log = logging.getLogger(__name__)
# A batch may take its timeout plus its bytes at this rate: a loaded Redis on a shared
# host still reads and appends well over 8 MiB/s.
MIN_BYTES_PER_SECOND = 8 * 1024 * 1024
OOM_DETAIL = "Redis is out of memory (maxmemory reached); retry later."
UNREPLICATED_DETAIL = "Too few Redis replicas confirmed the write in time; retry."
UNCONFIRMED_DETAIL = (
    "Redis did not confirm the write within {wait:.1f} s ({problem}): the bundle may or may "
    "not be queued. Retrying is safe: storage keeps each event_id once."
)


class _NotSent(Exception):
    """The batch could not be written at all (connect or PING failed): a 503."""


@dataclass(slots=True)
class _Pending:
    stream: str
    # one entry's fields, or a list of them added together in one MULTI/EXEC
    fields: dict[bytes, bytes] | list[dict[bytes, bytes]]
    future: asyncio.Future[Any]


class Publisher:
    """Owns the drain task; ``on_batch`` observes each pipeline's size (metrics)."""

    def __init__(
        self,
        redis: Redis,
        *,
        max_batch: int,
        timeout: float,
        retry_after: int,
        on_batch: Callable[[int], None] | None = None,
        min_replica_acks: int = 0,
        reply_wait: float | None = None,
    ) -> None:
        self._redis = redis
        self._reply_wait = timeout if reply_wait is None else max(reply_wait, timeout)
        self._min_replica_acks = min_replica_acks
        self._max_batch = max_batch
        self._timeout = timeout
        self._retry_after = retry_after
        self._on_batch = on_batch
        # A plain deque and one wake-up event instead of asyncio.Queue: the drain task
        # takes everything pending at once, and a request costs one append.
        self._pending: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        # asyncio.get_running_loop() is a getpid() system call on Python 3.11: kept here
        # instead of being looked up by every request.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: AbstractConnection | None = None
        self._conn_owner: Redis | None = None
        self._idle_ping = 0.0  # seconds idle after which a batch is preceded by a PING
        self._used_at = 0.0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._closing = False
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="ingest-publisher")
        self._task.add_done_callback(self._on_stopped)

    def _on_stopped(self, task: asyncio.Task[None]) -> None:
        # Cancelled (shutdown) or crashed: nothing would ever answer what is still queued.
        while self._pending:
            _fail(self._pending.popleft().future, self._retry_after)

    async def stop(self) -> None:
        """Finish what is queued (the drain task exits once nothing is pending)."""
        if self._task is None:
            return
        self._closing = True
        self._wakeup.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        await self._release()

    async def publish(self, stream: str, fields: dict[bytes, bytes]) -> str:
        """XADD ``fields`` to ``stream`` with the next pipeline; returns the entry id.

        No timer per request: every batch is bounded by ``timeout`` plus ``reply_wait``
        and a failed batch fails everything still pending, so a request waits at most
        about two of those (its own batch and the one in flight when it arrived).
        """
        if self._loop is None or not self.running:
            raise Unavailable("The queue publisher is not running.", self._retry_after)
        future: asyncio.Future[str] = self._loop.create_future()
        self._pending.append(_Pending(stream, fields, future))
        self._wakeup.set()
        # A cancelled request cancels only its own future; the drain task skips it.
        return await future

    async def publish_atomic(self, stream: str, entries: list[dict[bytes, bytes]]) -> list[str]:
        """XADD every field map of ``entries`` to ``stream`` in one MULTI/EXEC; their ids."""
        if self._loop is None or not self.running:
            raise Unavailable("The queue publisher is not running.", self._retry_after)
        future: asyncio.Future[list[str]] = self._loop.create_future()
        self._pending.append(_Pending(stream, entries, future))
        self._wakeup.set()
        return await future

    def _take_batch(self) -> list[_Pending]:
        pending = self._pending
        if len(pending) <= self._max_batch:
            batch = list(pending)
            pending.clear()
            return batch
        return [pending.popleft() for _ in range(self._max_batch)]

    def _fail_all(self, batch: list[_Pending]) -> None:
        """Redis did not take ``batch``: fail it and whatever queued up behind it."""
        for item in batch:
            _fail(item.future, self._retry_after)
        while self._pending:
            _fail(self._pending.popleft().future, self._retry_after)

    async def _run(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if len(self._pending) < self._max_batch:
                # One more pass of the event loop: the requests it handles queue their
                # XADDs behind this one, and the whole group shares the round trip.
                await asyncio.sleep(0)
            batch = self._take_batch()
            try:
                await self._send(batch)
            except Exception:  # never leave a request waiting forever
                log.exception("XADD pipeline of %d failed unexpectedly", len(batch))
                self._fail_all(batch)

    async def _connection(self) -> AbstractConnection:
        """The publisher's own connection, opened once and kept.

        Made with the client's connection settings (address, credentials, TLS) but none of
        redis-py's per-command timers: a socket timeout wraps every write in a new task
        (``asyncio.wait_for``) and every reply read in a timer, and its health check reads
        the loop's clock (a getpid() system call on Python 3.11) after every reply. The
        batch timeout in :meth:`_send` bounds the connect, the write and all the replies;
        the client's health-check interval becomes a PING before a batch sent after that
        long idle. Not taken from the pool: a pooled check-out probes the socket, an extra
        event loop round.
        """
        conn = self._conn
        if conn is not None and self._conn_owner is self._redis:
            if self._idle_ping and time.monotonic() - self._used_at > self._idle_ping:
                await self._ping_or_disconnect(conn)
            return conn
        await self._release()
        pool = self._redis.connection_pool
        self._idle_ping = float(pool.connection_kwargs.get("health_check_interval") or 0)
        kwargs = {**pool.connection_kwargs, "socket_timeout": None, "health_check_interval": 0}
        # connected by its first send_packed_command, inside the batch timeout
        conn = pool.connection_class(**kwargs)
        self._conn, self._conn_owner = conn, self._redis
        return conn

    async def _ping_or_disconnect(self, conn: AbstractConnection) -> None:
        """PING after a long idle; drop a connection that died meanwhile (a server timeout,
        a NAT forgetting the flow), so the batch goes out on a new one instead of failing."""
        try:
            # half the batch timeout: a silent connection leaves time for a new one
            async with asyncio.timeout(self._timeout / 2):
                await conn.send_command("PING", check_health=False)
                await conn.read_response()
        except (RedisError, OSError, TimeoutError):
            await conn.disconnect(nowait=True)

    async def _release(self) -> None:
        conn = self._conn
        self._conn = self._conn_owner = None
        if conn is not None:
            await conn.disconnect()

    async def _send(self, batch: list[_Pending]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        packet = b"".join([_pack(i) for i in batch])
        if self._min_replica_acks:
            # Answered once that many replicas hold every write of this connection so far
            # (or after half the batch timeout): a 2xx then survives the master's loss.
            packet += _pack_wait(self._min_replica_acks, int(self._timeout * 500))
        wait = self._reply_wait + len(packet) / MIN_BYTES_PER_SECOND
        try:
            results, acks = await self._exchange(batch, packet, wait)
        except _NotSent as exc:
            # nothing of the batch was written: a 503 is the truth
            log.warning("XADD pipeline of %d not sent: %s", len(batch), exc)
            await self._drop_connection()
            self._fail_all(batch)
            return
        except (RedisError, OSError, TimeoutError) as exc:
            problem = "no reply" if isinstance(exc, TimeoutError) else type(exc).__name__
            log.warning("XADD pipeline of %d unconfirmed: %s", len(batch), problem)
            # Replies may still be on their way: never reuse a connection left mid-batch.
            await self._drop_connection()
            detail = UNCONFIRMED_DETAIL.format(wait=wait, problem=problem)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(Unconfirmed(detail, self._retry_after))
            self._fail_all([])  # the requests queued behind it were never written
            return
        self._used_at = time.monotonic()
        del packet
        if self._min_replica_acks and acks < self._min_replica_acks:
            self._fail_unreplicated(batch, acks)
            return
        self._deliver(batch, results)

    async def _exchange(
        self, batch: list[_Pending], packet: bytes, wait: float
    ) -> tuple[list[Any], int]:
        """Write ``packet`` and read its replies (and the WAIT's acks) within ``wait``.

        :class:`_NotSent` when the connection cannot be opened before anything was
        written. A connection found dead (killed, closed by the server's idle timeout,
        Redis restarted) gets the packet once more on a new one: if the first write was
        added after all, its entries are duplicates that storage drops.
        """
        for attempt in (1, 2):
            try:
                conn = await self._connect()
            except (RedisError, OSError, TimeoutError) as exc:
                if attempt == 1:
                    raise _NotSent(repr(exc)) from exc
                raise  # the first write may have been added: not provably unsent
            try:
                async with asyncio.timeout(wait):
                    await conn.send_packed_command(packet, check_health=False)
                    results = await _read_replies(conn, batch)
                    acks = 0
                    if self._min_replica_acks:
                        acks = int(await conn.read_response(disable_decoding=True))
                return results, acks
            except (RedisError, OSError) as exc:
                if attempt == 2 or isinstance(exc, RedisTimeoutError):
                    raise
                log.info("XADD pipeline of %d sent again: %s", len(batch), repr(exc))
                await self._drop_connection()
        raise AssertionError("unreachable")

    async def _connect(self) -> AbstractConnection:
        """The connection, open, within ``timeout``; a failure here wrote nothing."""
        async with asyncio.timeout(self._timeout):
            conn = await self._connection()
            await conn.connect()  # type: ignore[no-untyped-call]  # no-op when open
            return conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            await self._conn.disconnect(nowait=True)

    def _fail_unreplicated(self, batch: list[_Pending], acks: int) -> None:
        """Added on the master, but fewer replicas than required hold it: a failover now
        could lose it, so nothing is promised. A retry adds it again; storage keeps each
        event_id once."""
        log.warning(
            "WAIT: %d of %d replicas confirmed a pipeline of %d",
            acks,
            self._min_replica_acks,
            len(batch),
        )
        for item in batch:
            _fail(item.future, self._retry_after, UNREPLICATED_DETAIL)

    def _deliver(self, batch: list[_Pending], results: list[Any]) -> None:
        for item, result in zip(batch, results, strict=True):
            if item.future.done():
                continue
            if isinstance(result, ResponseError):
                log.warning("XADD to %s failed: %s", item.stream, result)
                oom = isinstance(result, OutOfMemoryError) or "OOM" in str(result)
                _fail(item.future, self._retry_after, OOM_DETAIL if oom else None)
            elif isinstance(result, list):
                item.future.set_result([r.decode() for r in result])
            else:
                item.future.set_result(result.decode())


async def _read_replies(conn: AbstractConnection, batch: list[_Pending]) -> list[Any]:
    """One reply per item: an entry id, a list of them, or the ResponseError."""
    results: list[Any] = []
    for item in batch:
        if isinstance(item.fields, list):
            results.append(await _read_transaction(conn, len(item.fields)))
            continue
        try:
            results.append(await conn.read_response(disable_decoding=True))
        except ResponseError as exc:  # one refused XADD; the rest still answer
            results.append(exc)
    return results


async def _read_transaction(conn: AbstractConnection, count: int) -> list[bytes] | ResponseError:
    """The replies of ``MULTI``, ``count`` XADDs and ``EXEC``: the ids, or the first error.

    An XADD refused while queueing (out of memory, bad arguments) makes Redis discard the
    whole transaction at EXEC (EXECABORT): nothing of it was added.
    """
    error: ResponseError | None = None
    for _ in range(count + 1):  # +OK, then +QUEUED per XADD
        try:
            await conn.read_response(disable_decoding=True)
        except ResponseError as exc:
            error = error or exc
    try:
        reply = await conn.read_response(disable_decoding=True)
    except ResponseError as exc:
        return error or exc
    if reply is None:  # EXEC answered nil: the transaction was discarded
        return error or ResponseError("EXEC discarded the transaction")
    failed = [r for r in reply if isinstance(r, ResponseError)]
    if failed:  # same stream, same checks: in practice all of them fail, or none
        log.error("EXEC added %d of %d entries", count - len(failed), count)
        return failed[0]
    return list(reply)


def _pack_wait(replicas: int, timeout_ms: int) -> bytes:
    """RESP of ``WAIT <replicas> <timeout_ms>``."""
    n, t = str(replicas).encode(), str(max(timeout_ms, 1)).encode()
    return b"*3\r\n$4\r\nWAIT\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(n), n, len(t), t)


def _pack(item: _Pending) -> bytes:
    if isinstance(item.fields, list):
        return b"".join(
            [
                b"*1\r\n$5\r\nMULTI\r\n",
                *(_pack_xadd(item.stream, f) for f in item.fields),
                b"*1\r\n$4\r\nEXEC\r\n",
            ]
        )
    return _pack_xadd(item.stream, item.fields)


def _pack_xadd(stream_name: str, fields: dict[bytes, bytes]) -> bytes:
    """RESP of ``XADD <stream> * <field> <value> ...`` (what redis-py's packer would send)."""
    stream = stream_name.encode()
    parts = [
        b"*%d\r\n$4\r\nXADD\r\n$%d\r\n%b\r\n$1\r\n*\r\n"
        % (3 + 2 * len(fields), len(stream), stream)
    ]
    for name, value in fields.items():
        parts.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(name), name, len(value), value))
    return b"".join(parts)


def _fail(future: asyncio.Future[Any], retry_after: int, detail: str | None = None) -> None:
    if not future.done():
        message = detail or "The queue is unreachable."
        reason = "redis_oom" if detail == OOM_DETAIL else None
        future.set_exception(Unavailable(message, retry_after, reason=reason))
