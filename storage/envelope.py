"""Stream entry codec: what ingest XADDs and the consumer XREADGROUPs.

The stream contract (keys, entry versions, groups, dead streams, markers) is stated in
docs/architecture.md, "Stream contract"; the decisions behind it in docs/design-notes.md.

Pipeline position: the only format shared by the two tiers through Redis. An entry is a
flat field map ``{v, bundle, received_at, token}``; ``bundle`` holds the normalised bundle
as orjson/pydantic JSON bytes. ``v`` versions the layout so a consumer can refuse (and
dead-letter) an entry written by a newer ingest instead of misreading it.

Version 2 adds three fields and nothing else: a bundle too large for one entry is split
into several entries of its partition (added in one MULTI/EXEC), each carrying
``bundle_id``, ``chunk`` (0-based index) and ``chunks`` (how many). Each chunk's ``bundle``
is a normal bundle holding a slice of the events (artifacts on chunk 0 only), so storage
handles a chunk like any other entry. Single-entry bundles are still written as version 1.

Decoding also refuses what storage could never write, so it is dead-lettered at once
instead of failing its batch on every retry: U+0000 in any string (PostgreSQL cannot
store it; ingest already answers 422 for it, this covers entries from other producers)
and payloads orjson cannot serialise. The payload bytes serialised for that check are
the ones the hash chain covers, kept on the envelope so storage does not serialise again;
so are the events' normalised timestamp texts (as sent, when they already are).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from storage.chain import payload_json
from storage.schema import (
    NUL_ESCAPE,
    STREAM_DECODE,
    Bundle,
    format_timestamp,
    is_normalised,
    nul_locations,
)

ENVELOPE_VERSION = 1
CHUNKED_VERSION = 2  # version 1 plus bundle_id, chunk, chunks
SUPPORTED_VERSIONS = frozenset({ENVELOPE_VERSION, CHUNKED_VERSION})


class EnvelopeError(ValueError):
    """An entry that cannot be decoded; the consumer dead-letters it with this reason."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded stream entry. ``entry_id`` is the Redis stream id once read back."""

    bundle: Bundle
    received_at: float
    token_label: str
    entry_id: str = ""
    version: int = ENVELOPE_VERSION
    # payload_json and normalised timestamp text of each event, computed once at decode
    # (storage hashes and stores these); empty when the envelope was built in process, and
    # texts() computes them then
    payloads: tuple[bytes, ...] = ()
    timestamps: tuple[str, ...] = ()
    # position of this entry among the entries of one split bundle (0 of 1 when not split)
    chunk: int = 0
    chunks: int = 1

    def texts(self) -> tuple[Sequence[str], Sequence[bytes]]:
        """Each event's normalised timestamp and payload bytes, as the hash chain uses them."""
        events = self.bundle.events
        return (
            self.timestamps or [format_timestamp(ev.timestamp) for ev in events],
            self.payloads or [payload_json(ev.payload) for ev in events],
        )


def encode(
    bundle: Bundle, token_label: str, received_at: float | None = None
) -> dict[bytes, bytes]:
    """Build the XADD field map of one bundle."""
    stamp = time.time() if received_at is None else received_at
    return {
        b"v": str(ENVELOPE_VERSION).encode(),
        b"bundle": bundle.model_dump_json().encode(),
        b"received_at": repr(stamp).encode(),
        b"token": token_label.encode(),
    }


def _text(fields: dict[bytes, bytes], name: bytes) -> bytes:
    try:
        return fields[name]
    except KeyError:
        raise EnvelopeError(f"envelope field {name.decode()!r} missing") from None


def _loc_text(loc: list[int | str]) -> str:
    """``["events", 0, "payload", "x"]`` as ``bundle.events[0].payload.x`` (a key holding
    NUL shown as its repr)."""
    out = "bundle"
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part!r}" if "\x00" in part else f".{part}"
    return out


def payloads_of(bundle: Bundle) -> tuple[bytes, ...]:
    """Each event's payload as the hash chain serialises it (:func:`storage.chain.payload_json`).

    Raises :class:`EnvelopeError` for a payload orjson cannot write (an integer beyond 64
    bits, a lone surrogate): such an event could never be stored, and as part of a retried
    batch it would block its partition.
    """
    try:
        return tuple(payload_json(ev.payload) for ev in bundle.events)
    except TypeError as exc:
        raise EnvelopeError(f"envelope bundle cannot be stored: {exc}") from None


def timestamps_of(data: Any, bundle: Bundle) -> tuple[str, ...]:
    """Normalised timestamp texts of the events of ``bundle``, validated from ``data``.

    The texts as sent where already normalised (:func:`storage.schema.is_normalised`),
    else formatted from the parsed datetimes.
    """
    return tuple(
        [
            raw["timestamp"] if is_normalised(raw["timestamp"]) else format_timestamp(ev.timestamp)
            for raw, ev in zip(data["events"], bundle.events, strict=True)
        ]
    )


def decode(entry_id: str, fields: dict[bytes, bytes]) -> Envelope:
    """Decode an entry read from a stream; raises :class:`EnvelopeError` with a reason."""
    try:
        version = int(_text(fields, b"v"))
    except ValueError:
        raise EnvelopeError("envelope version is not an integer") from None
    if version not in SUPPORTED_VERSIONS:
        raise EnvelopeError(f"unsupported envelope version {version}")
    try:
        received_at = float(_text(fields, b"received_at"))
    except ValueError:
        raise EnvelopeError("envelope received_at is not a number") from None
    raw = _text(fields, b"bundle")
    try:
        # parsed as ingest parses a body (orjson, then the models): pydantic's own JSON
        # parser stops at 200 levels, orjson at 1024, so validate_json refused (and
        # dead-lettered) bundles nested 201-254 deep that ingest had answered 202
        data = orjson.loads(raw)
        bundle = Bundle.model_validate(data, context=STREAM_DECODE)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"envelope bundle is not JSON: {exc}") from None
    except ValidationError as exc:
        raise EnvelopeError(f"envelope bundle invalid: {exc.error_count()} error(s)") from None
    if NUL_ESCAPE in raw:  # cheap pre-check; the walk runs only when it may matter
        nul = [_loc_text(loc) for loc in nul_locations(bundle.model_dump())]
        if nul:
            raise EnvelopeError(
                f"NUL character (\\u0000) in {', '.join(nul[:5])}: PostgreSQL cannot store it"
            )
    token = _text(fields, b"token").decode("utf-8", errors="replace")
    chunk, chunks = _chunk_of(fields, bundle) if version == CHUNKED_VERSION else (0, 1)
    return Envelope(
        bundle=bundle,
        received_at=received_at,
        token_label=token,
        entry_id=entry_id,
        payloads=payloads_of(bundle),
        timestamps=timestamps_of(data, bundle),
        chunk=chunk,
        chunks=chunks,
    )


def _chunk_of(fields: dict[bytes, bytes], bundle: Bundle) -> tuple[int, int]:
    """``(chunk, chunks)`` of a version 2 entry, checked against its bundle."""
    try:
        chunk, chunks = int(_text(fields, b"chunk")), int(_text(fields, b"chunks"))
    except ValueError:
        raise EnvelopeError("envelope chunk or chunks is not an integer") from None
    if not 0 <= chunk < chunks:
        raise EnvelopeError(f"envelope chunk {chunk} is outside 0..{chunks - 1}")
    if _text(fields, b"bundle_id") != bundle.bundle_id.encode():
        raise EnvelopeError("envelope bundle_id differs from its bundle's")
    return chunk, chunks
