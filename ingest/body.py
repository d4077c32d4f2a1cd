"""Request body → validated :class:`Bundle`, or a raised client error (DESIGN §2).

Pipeline position: first step of ``POST /v1/events/ingest`` after auth. The server runs
with ``auto_decompress=False`` (see :data:`ingest.app.HANDLER_ARGS`) so the raw bytes
arrive here; gzip is inflated with ``zlib.decompressobj`` and ``max_length`` so a gzip bomb
is stopped at the limit instead of inflating in memory. JSON is parsed once by orjson and
the resulting object validated by pydantic.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from ingest.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    Unprocessable,
    UnsupportedMedia,
)
from storage.schema import Bundle

GZIP_MAGIC = b"\x1f\x8b"


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
        raise PayloadTooLarge(f"Request body exceeds {max_raw} bytes.", reason="body_size")


def gunzip(raw: bytes, limit: int) -> bytes:
    """Inflate a gzip body, never holding more than ``limit + 1`` output bytes."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    out = bytearray()
    data = raw
    try:
        while True:
            out += inflater.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                raise PayloadTooLarge(
                    f"Decompressed body exceeds {limit} bytes.", reason="body_size"
                )
            data = inflater.unconsumed_tail
            if not data:
                break
        out += inflater.flush()
    except zlib.error:
        raise BadRequest("Body is not valid gzip.", reason="bad_gzip") from None
    if not inflater.eof:
        raise BadRequest("Body is not valid gzip (truncated).", reason="bad_gzip")
    if len(out) > limit:
        raise PayloadTooLarge(f"Decompressed body exceeds {limit} bytes.", reason="body_size")
    return bytes(out)


def _loc(err_loc: tuple[int | str, ...]) -> list[int | str]:
    return list(err_loc)


def _nul_locations(value: Any, loc: list[int | str]) -> Iterator[list[int | str]]:
    """Where a string (key or value) holds U+0000.

    PostgreSQL's text and jsonb cannot store it, so such an event could never be committed
    there and would block its batch until dead-lettered; it is rejected for every backend
    so both store the same events.
    """
    if isinstance(value, str):
        if "\x00" in value:
            yield loc
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield [*loc, key]
            yield from _nul_locations(item, [*loc, key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _nul_locations(item, [*loc, i])


def parse_bundle(body: bytes, max_events: int) -> Bundle:
    """400 for malformed JSON/UTF-8, 413 for too many events, 422 for schema problems."""
    try:
        obj: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Body is not valid JSON: {exc}.", reason="bad_json") from None
    if isinstance(obj, dict):
        events = obj.get("events")
        if isinstance(events, list) and len(events) > max_events:
            raise PayloadTooLarge(
                f"Bundle has {len(events)} events; at most {max_events} are accepted.",
                reason="event_count",
            )
    if b"\\u0000" in body:  # cheap pre-check; the walk below runs only when it may matter
        nul = list(_nul_locations(obj, []))
        if nul:
            raise Unprocessable(
                "Strings must not contain the NUL character (\\u0000).",
                errors=[{"loc": loc, "msg": "NUL character in string"} for loc in nul[:20]],
            )
    try:
        return Bundle.model_validate(obj)
    except ValidationError as exc:
        errors = [
            {"loc": _loc(e["loc"]), "msg": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        noun = "problem" if len(errors) == 1 else "problems"
        raise Unprocessable(
            f"Bundle failed validation with {len(errors)} {noun}.", errors=errors
        ) from None


async def read_body(request: web.Request, max_raw: int, body_timeout: float) -> bytes:
    """The raw body, or 408 when a slow or stalled client takes longer than ``body_timeout``.

    aiohttp has no body-read deadline of its own, so without this a trickling upload
    would hold its handler (and its buffer) for as long as the client likes.
    """
    try:
        if request.content.is_eof():
            # the whole body came with the headers (the usual bundle): nothing can stall,
            # so skip arming a timer (asyncio.timeout was ~5% of the ingest's CPU)
            return await request.read()
        async with asyncio.timeout(body_timeout):
            return await request.read()
    except TimeoutError:
        detail = f"The request body did not arrive within {body_timeout:g} s."
        raise RequestTimeout(detail) from None
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(
            f"Request body exceeds {max_raw} bytes.", reason="body_size"
        ) from None


async def read_bundle(
    request: web.Request, max_raw: int, max_body: int, max_events: int, body_timeout: float = 30.0
) -> tuple[Bundle, int]:
    """The validated bundle and its (decompressed) size in bytes."""
    check_headers(request, max_raw=max_raw)
    raw = await read_body(request, max_raw, body_timeout)
    gzipped = request.headers.get("Content-Encoding", "").strip().lower() == "gzip"
    # Served without HANDLER_ARGS, aiohttp has already inflated the body (capped by
    # client_max_size); only bytes that still carry the gzip magic are inflated here.
    if gzipped and raw[:2] == GZIP_MAGIC:
        body = gunzip(raw, max_body)
    else:
        if len(raw) > max_body:
            raise PayloadTooLarge(f"Request body exceeds {max_body} bytes.", reason="body_size")
        body = raw
    return parse_bundle(body, max_events), len(body)
