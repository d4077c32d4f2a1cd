"""The bytes of a request body: headers checked, read under a deadline, gzip inflated.

Pipeline position: the first step of ``POST /v1/events/ingest`` after auth, before the
JSON is parsed (:mod:`ingest.body`). A declared ``Content-Length`` over the limit is a 413
before anything is read; the body is read from aiohttp's stream without its cached copy,
one deadline (``LEVIATHAN_BODY_TIMEOUT_SECONDS``) for the whole of it, and the request's
grant in the in-flight budget (:mod:`ingest.budget`) grows with every chunk kept, so a
slow upload holds what it has sent, never what it announced. Gzip is inflated with
``zlib.decompressobj`` and ``max_length``, so a gzip bomb stops at the limit, and each
step of output is charged before it is produced (a gzip trailer may lie about the size).
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import StreamReader, web

from ingest.budget import READ_FACTOR, Grant
from webcore.errors import BadRequest, PayloadTooLarge, RequestTimeout, UnsupportedMedia

GZIP_MAGIC = b"\x1f\x8b"
RAW_SLACK = 64 * 1024  # gzip of incompressible data is slightly larger than the data
INFLATE_STEP = 4 * 1024 * 1024  # gzip output inflated (and charged) this much at a time


def describe_size(nbytes: int) -> str:
    """A byte limit in the units the docs use: ``64 MiB``, ``512 KiB``, else bytes."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size and nbytes % size == 0:
            return f"{nbytes // size} {unit}"
    return f"{nbytes} bytes"


def too_large(what: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} exceeds the limit of {describe_size(limit)}.", reason="body_size"
    )


def check_headers(request: web.Request, max_raw: int) -> None:
    """415 for a wrong media type or encoding, 413 for an announced oversize body."""
    if request.content_type != "application/json":
        raise UnsupportedMedia("Content-Type must be application/json.")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMedia("Only the utf-8 charset is accepted.")
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("gzip", "identity", ""):
        raise UnsupportedMedia("Content-Encoding must be gzip or identity.")
    length = request.content_length
    if length is not None and length > max_raw:
        raise too_large("Request body", max_raw - RAW_SLACK)


class _Inflater:
    """A gzip body inflated a step at a time, never more than ``limit + 1`` output bytes;
    the caller may charge each step's output before it is produced."""

    def __init__(self, raw: bytes | bytearray, limit: int) -> None:
        self.raw, self.limit = raw, limit
        self.inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self.out = bytearray()
        self.data: bytes | bytearray = raw

    def step(self, size: int) -> bool:
        """Inflate up to ``size`` more bytes; True once the input is used up."""
        try:
            self.out += self.inflater.decompress(self.data, size)
        except zlib.error:
            raise BadRequest("Body is not valid gzip.", reason="bad_gzip") from None
        if len(self.out) > self.limit:
            raise too_large("Decompressed body", self.limit)
        self.data = self.inflater.unconsumed_tail
        return not self.data

    def result(self) -> bytearray:
        try:
            self.out += self.inflater.flush()
        except zlib.error:
            raise BadRequest("Body is not valid gzip.", reason="bad_gzip") from None
        if not self.inflater.eof:
            raise BadRequest("Body is not valid gzip (truncated).", reason="bad_gzip")
        if len(self.out) > self.limit:
            raise too_large("Decompressed body", self.limit)
        return self.out


def gunzip(raw: bytes | bytearray, limit: int) -> bytearray:
    """Inflate a gzip body, never holding more than ``limit + 1`` output bytes.

    Returned as the bytearray it was inflated into: a copy to ``bytes`` would double
    the peak memory of a large body for a moment.
    """
    body = _Inflater(raw, limit)
    while not body.step(limit + 1 - len(body.out)):
        pass
    return body.result()


async def _read_stream(content: StreamReader, max_raw: int, grant: Grant | None = None) -> bytes:
    """Every byte of the body, at most ``max_raw``; one chunk is returned without a copy.

    With ``grant``, the grant grows before each chunk is kept (:data:`READ_FACTOR` times
    the bytes so far): a slow upload holds what it has sent, never what it announced.
    """
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = await content.readany()
        if not chunk:
            break
        total += len(chunk)
        if total > max_raw:
            raise too_large("Request body", max_raw - RAW_SLACK)
        if grant is not None and parts:
            # streaming: charged before each further chunk is kept (a body that came in
            # one chunk is charged with its parse estimate, one budget step per request)
            await grant.grow(READ_FACTOR * total)
        parts.append(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_body(
    request: web.Request, max_raw: int, body_timeout: float, grant: Grant | None = None
) -> bytes:
    """The raw body, or 408 when a slow or stalled client takes longer than ``body_timeout``.

    aiohttp has no body-read deadline of its own, so without this a trickling upload
    would hold its handler (and its buffer) for as long as the client likes. The deadline
    is for the whole body (waits for room in the budget included), counted from the start
    of the handler.
    """
    try:
        if request.content.is_eof():
            # the whole body came with the headers (the usual bundle): nothing can stall,
            # so skip arming a timer (asyncio.timeout was ~5% of the ingest's CPU)
            return await _read_stream(request.content, max_raw, grant)
        async with asyncio.timeout(body_timeout):
            return await _read_stream(request.content, max_raw, grant)
    except TimeoutError:
        # aiohttp would otherwise keep reading the rest for its lingering time (10 s)
        # after the 408 before closing: the client saw the timeout fire 10 s late. A read
        # error on the body ends that at once; the connection closes after the answer.
        request.content.set_exception(TimeoutError())
        detail = f"The request body did not arrive within {body_timeout:g} s."
        raise RequestTimeout(detail) from None


async def inflate(raw: bytes | bytearray, limit: int, grant: Grant) -> bytearray:
    """:func:`gunzip` with the grant grown before each :data:`INFLATE_STEP` of output.

    A gzip trailer may lie about the size, so the output is charged as it is produced.
    """
    body = _Inflater(raw, limit)
    while True:
        step = min(INFLATE_STEP, limit + 1 - len(body.out))
        # a growing bytearray may be copied once more: charge its bytes twice
        await grant.grow(len(raw) + 2 * (len(body.out) + step))
        if body.step(step):
            return body.result()
