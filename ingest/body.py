"""Request body → validated bundle ready to queue, or a raised client error (README).

Pipeline position: ``POST /v1/events/ingest`` after auth. The server runs with
``auto_decompress=False`` (see :data:`ingest.app.HANDLER_ARGS`) so the raw bytes arrive
here, read and inflated by :mod:`ingest.upload`. JSON is parsed once by orjson.

Memory: the body is read from the stream without aiohttp's cached copy (``request.read()``
would keep it for the request's whole life, ``?wait=`` included) and dropped once parsed.
A bundle of up to :data:`CHUNK_EVENTS` events is validated in one pass, the common case
and the fast path: into plain dicts (:mod:`ingest.plain`), or as one model when those
refuse it (the model then names the errors); a larger one is validated
:data:`CHUNK_EVENTS` events at a time, each chunk's models encoded into entry JSON
(:class:`ingest.entry.ChunkWriter`) and dropped before the next, with a yield to the event
loop in between. Its peak memory is then the
body's parsed values plus one chunk of models plus the encoded entries, not a whole
bundle of models (about 14 times the body). Error locations stay those of the whole
bundle (``["events", 41327, "timestamp"]``).

Budget: the request's grant (:mod:`ingest.budget`) grows as the body's bytes arrive and
are inflated, then to the estimate of :mod:`ingest.cost` before orjson runs; a body whose
estimate exceeds one request's share is a 413 that never reaches the parser. One event
whose normalised JSON exceeds ``LEVIATHAN_MAX_EVENT_BYTES`` is a 413 naming its index.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from ingest.budget import Grant
from ingest.cost import Cost, estimate
from ingest.entry import ChunkWriter, chunk_fields, entry_fields, event_json, split_bundle
from ingest.plain import PlainBundle, validate_plain
from ingest.settings import IngestSettings
from ingest.upload import (
    GZIP_MAGIC,
    RAW_SLACK,
    check_headers,
    describe_size,
    gunzip,
    inflate,
    read_body,
    too_large,
)
from storage.schema import (
    NUL_ESCAPE,
    Bundle,
    WireEvent,
    check_roles,
    nul_locations,
    validate_events,
)
from webcore.errors import BadRequest, PayloadTooLarge, Unprocessable

CHUNK_EVENTS = 1000


@dataclass(frozen=True, slots=True)
class Limits:
    """What one ingest request may be; built once from the settings."""

    max_body: int
    max_events: int
    entry_max: int
    body_timeout: float = 30.0
    max_event: int = 8 * 1024 * 1024
    share: int = 1 << 62  # one request's share of the in-flight budget

    @property
    def max_raw(self) -> int:
        return self.max_body + RAW_SLACK

    @classmethod
    def of(cls, settings: IngestSettings) -> Limits:
        return cls(
            settings.max_body_bytes,
            settings.max_events,
            settings.entry_max_bytes,
            settings.body_timeout_seconds,
            settings.max_event_bytes,
            settings.request_share,
        )


@dataclass(slots=True)
class Prepared:
    """A validated bundle: either the whole model (the fast path) or its encoded chunks."""

    bundle_id: str
    count: int
    size: int
    bundle: Bundle | PlainBundle | None = None
    chunks: list[bytes] | None = None

    def entries(
        self, token_label: str, entry_max: int, max_event: int = 1 << 62
    ) -> list[dict[bytes, bytes]]:
        """The XADD field maps: one for most bundles, several for a split one.

        413 for an event whose JSON exceeds ``max_event`` (looked for only when the whole
        bundle's JSON does).
        """
        if self.bundle is not None:
            fields = entry_fields(self.bundle, token_label)
            size = len(fields[b"bundle"])
            if size > max_event:
                del fields  # the check encodes each event again: not both copies at once
                _check_events(self.bundle, max_event)
                fields = entry_fields(self.bundle, token_label)  # big, but no event is
            if size <= entry_max or len(self.bundle.events) < 2:
                return [fields]
            del fields
            self.chunks, self.bundle = split_bundle(self.bundle, entry_max), None
        assert self.chunks is not None
        return chunk_fields(self.bundle_id, self.chunks, token_label)


def event_too_large(index: int, size: int, max_event: int) -> PayloadTooLarge:
    """413 naming the event and ``LEVIATHAN_MAX_EVENT_BYTES``."""
    limit = describe_size(max_event)
    return PayloadTooLarge(
        f"Event {index} is {size} bytes of JSON; one event may be at most {limit} "
        "(LEVIATHAN_MAX_EVENT_BYTES).",
        errors=[{"loc": ["events", index], "msg": f"event larger than {limit}"}],
        reason="event_size",
    )


def _check_events(bundle: Bundle | PlainBundle, max_event: int) -> None:
    events: Sequence[WireEvent | dict[str, Any]] = bundle.events
    for index, event in enumerate(events):
        size = len(event_json(event, index))
        if size > max_event:
            raise event_too_large(index, size, max_event)


def _over_share(cost: Cost, share: int) -> PayloadTooLarge:
    """413 for a body whose estimated parse would not fit in one request's share."""
    return PayloadTooLarge(
        f"Body would take about {cost.total >> 20} MiB of memory to parse and queue "
        f"({cost.containers} objects and arrays, {cost.values} values, {cost.strings} "
        f"strings in {cost.nbytes} bytes); one request may use at most "
        f"{describe_size(share)} (LEVIATHAN_INGEST_MAX_REQUEST_BYTES).",
        reason="body_cost",
    )


def _loc(err_loc: tuple[int | str, ...]) -> list[int | str]:
    return list(err_loc)


def _loads(body: bytes | bytearray) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Body is not valid JSON: {exc}.", reason="bad_json") from None


def _check_count(obj: Any, max_events: int) -> list[Any] | None:
    """The events list when there is one; 413 when it holds too many."""
    events = obj.get("events") if isinstance(obj, dict) else None
    if not isinstance(events, list):
        return None
    if len(events) > max_events:
        raise PayloadTooLarge(
            f"Bundle has {len(events)} events; at most {max_events} are accepted.",
            reason="event_count",
        )
    return events


def _check_nul(body: bytes | bytearray, obj: Any) -> None:
    # cheap pre-checks; the walk below runs only when it may matter. JSON can write U+0000
    # only as an escape: a body without any backslash (most bundles) needs no search for
    # the six-byte escape, and a single-byte search is a memchr (~20 times cheaper)
    if b"\\" in body and NUL_ESCAPE in body:
        nul = list(nul_locations(obj))
        if nul:
            raise Unprocessable(
                "Strings must not contain the NUL character (\\u0000).",
                errors=[{"loc": loc, "msg": "NUL character in string"} for loc in nul[:20]],
            )


def _errors(exc: ValidationError, start: int | None = None) -> list[dict[str, Any]]:
    """pydantic's errors as ``{loc, msg}`` items.

    With ``start``, ``exc`` came from a chunk of events beginning at that index: its
    locations begin with the index within the chunk and become the whole bundle's.
    """
    out: list[dict[str, Any]] = []
    for e in exc.errors(include_url=False, include_input=False, include_context=False):
        loc: list[int | str] = list(e["loc"])
        if start is not None and isinstance(loc[0], int):
            loc = ["events", start + loc[0], *loc[1:]]
        out.append({"loc": loc, "msg": e["msg"]})
    return out


def _invalid(errors: list[dict[str, Any]]) -> Unprocessable:
    noun = "problem" if len(errors) == 1 else "problems"
    return Unprocessable(f"Bundle failed validation with {len(errors)} {noun}.", errors=errors)


def _validate(obj: Any) -> Bundle:
    try:
        return Bundle.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(_errors(exc)) from None


def parse_bundle(body: bytes | bytearray, max_events: int) -> Bundle:
    """400 for malformed JSON/UTF-8, 413 for too many events, 422 for schema problems."""
    obj = _loads(body)
    _check_count(obj, max_events)
    _check_nul(body, obj)
    return _validate(obj)


async def _validate_chunked(
    obj: dict[str, Any], events: list[Any], entry_max: int, max_event: int
) -> Prepared:
    """Validate a large bundle :data:`CHUNK_EVENTS` events at a time, encoding as it goes.

    Every chunk is validated even after an error, so the 422 lists every problem as the
    one-model path would; encoding stops at the first error.
    """
    errors: list[dict[str, Any]] = []
    roles: list[dict[str, Any]] = []  # named only if nothing else failed, as for one model
    header: Bundle | None = None
    try:
        header = Bundle.model_validate({**obj, "events": []})
    except ValidationError as exc:
        errors.extend(_errors(exc))
    obj["events"] = None  # the list is released chunk by chunk below
    writer = ChunkWriter(header, entry_max) if header is not None else None
    count = len(events)
    for start in range(0, count, CHUNK_EVENTS):
        part = events[start : start + CHUNK_EVENTS]
        events[start : start + CHUNK_EVENTS] = [None] * len(part)
        models: list[WireEvent] = []
        try:
            models = validate_events(part)
            check_roles(models)
        except ValidationError as exc:
            # the role check runs on models that passed: its errors come alone
            (roles if models else errors).extend(_errors(exc, start))
            writer = None
        if writer is not None and not errors:
            for offset, model in enumerate(models):
                encoded = event_json(model, start + offset)
                if len(encoded) > max_event:
                    raise event_too_large(start + offset, len(encoded), max_event)
                writer.add(encoded)
        del models
        del part
        await asyncio.sleep(0)  # other requests (and health probes) run between chunks
    if errors or header is None or writer is None:
        raise _invalid(errors or roles)
    return Prepared(header.bundle_id, count, 0, chunks=writer.finish())


async def prepare(box: list[bytes | bytearray], limits: Limits) -> Prepared:
    """Parse and validate the decompressed body in ``box`` (see the module docstring).

    The caller hands over its only reference in a one-item list, so the text can be
    freed as soon as it is parsed.
    """
    body = box.pop()
    obj = _loads(body)
    events = _check_count(obj, limits.max_events)
    _check_nul(body, obj)
    size = len(body)
    del body  # the caller holds no reference: parsed, the text is no longer needed
    if events is None or len(events) <= CHUNK_EVENTS:
        # the model decides whatever the plain validator does not accept
        bundle = validate_plain(obj) or _validate(obj)
        return Prepared(bundle.bundle_id, len(bundle.events), size, bundle=bundle)
    prepared = await _validate_chunked(obj, events, limits.entry_max, limits.max_event)
    prepared.size = size
    return prepared


async def read_prepared(
    request: web.Request, limits: Limits, grant: Grant | None = None
) -> Prepared:
    """Headers, body, gzip, JSON, validation; ``grant`` grows with what each step costs.

    The grant grows as the body's bytes arrive and are inflated, then, before parsing, to
    the body's estimated cost (:func:`ingest.cost.estimate`); a body whose estimate exceeds
    one request's share is refused with 413 unparsed.
    """
    check_headers(request, max_raw=limits.max_raw)
    raw: bytes | bytearray = await read_body(request, limits.max_raw, limits.body_timeout, grant)
    gzipped = request.headers.get("Content-Encoding", "").strip().lower() == "gzip"
    # A body sent as gzip that is not gzip (plain JSON included) is a 400, refused before
    # anything of it is inflated or charged. The app must be served with HANDLER_ARGS, so
    # that aiohttp never inflates the body before this point.
    if gzipped:
        if raw[:2] != GZIP_MAGIC:
            raise BadRequest("Body is not valid gzip.", reason="bad_gzip")
        raw = (
            gunzip(raw, limits.max_body)
            if grant is None
            else await inflate(raw, limits.max_body, grant)
        )
    elif len(raw) > limits.max_body:
        raise too_large("Request body", limits.max_body)
    cost = estimate(raw)
    if cost.total > limits.share:
        raise _over_share(cost, limits.share)
    if grant is not None and not grant.try_grow(cost.total):
        await grant.grow(cost.total)
    box = [raw]
    del raw
    return await prepare(box, limits)


async def read_bundle(
    request: web.Request, max_raw: int, max_body: int, max_events: int, body_timeout: float = 30.0
) -> tuple[Bundle, int]:
    """The validated bundle and its (decompressed) size in bytes, as one model.

    For callers that need the whole model (benchmarks, tools); the ingest handler uses
    :func:`read_prepared`, which bounds the memory of large bundles.
    """
    check_headers(request, max_raw=max_raw)
    raw: bytes | bytearray = await read_body(request, max_raw, body_timeout)
    gzipped = request.headers.get("Content-Encoding", "").strip().lower() == "gzip"
    if gzipped:
        raw = gunzip(raw, max_body)
    elif len(raw) > max_body:
        raise too_large("Request body", max_body)
    return parse_bundle(raw, max_events), len(raw)
