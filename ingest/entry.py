"""Validated bundle → stream entry fields, the ingest's fast path (docs/design-notes.md, Queue).

Pipeline position: between validation (``ingest.body``) and the group-commit XADD
(``ingest.publisher``). It produces exactly the field map of ``storage.envelope.encode``
(``{v, bundle, received_at, token}``, ``bundle`` = the normalised bundle as JSON bytes) but
serialises the validated models' ``__dict__`` with orjson instead of pydantic's
``model_dump_json``: that one calls the Python timestamp serializer once per event and was
the largest single cost of the ingest path after validation itself (about 50 µs for a
20-event bundle vs 13 µs here). Validated timestamps are already UTC, and orjson's
``OPT_UTC_Z`` writes them in the same text as ``storage.schema.format_timestamp``
(``…Z``, microseconds only when non-zero); tests compare the bytes with
``model_dump_json`` over generated bundles.

A bundle whose JSON would exceed one entry's size (``LEVIATHAN_STREAM_ENTRY_MAX_BYTES``) is
written as several entries instead (:class:`ChunkWriter`): each holds a normal bundle with
a slice of the events (the artifacts on the first) plus the chunk fields of
``storage.envelope``; the publisher adds them in one MULTI/EXEC.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from ingest.plain import PlainBundle
from storage.envelope import CHUNKED_VERSION, ENVELOPE_VERSION
from storage.schema import Bundle, WireArtifact, WireEvent
from webcore.errors import Unprocessable

_VERSION = str(ENVELOPE_VERSION).encode()
_CHUNKED_VERSION = str(CHUNKED_VERSION).encode()
_OPTIONS = orjson.OPT_UTC_Z


def _model_fields(value: object) -> object:
    """orjson's fallback for the models inside a bundle."""
    if type(value) is WireEvent:
        # extra="ignore": __dict__ holds exactly the declared fields, in declaration order
        return value.__dict__
    if isinstance(value, WireArtifact):
        # rare and small; extra="allow" keys live outside __dict__, pydantic adds them
        return value.model_dump(mode="json")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def bundle_json(bundle: Bundle | PlainBundle) -> bytes:
    """The normalised bundle as JSON bytes, identical to ``bundle.model_dump_json()``.

    The events go to orjson as their ``__dict__`` list: one list comprehension instead of
    a fallback call per event (``role_fields``, never serialised, is left out); a
    :class:`PlainBundle`'s events are those dicts already.
    """
    if type(bundle) is PlainBundle:
        events: list[dict[str, Any]] = bundle.events
    else:
        events = [ev.__dict__ for ev in bundle.events]
    data = {
        "target": bundle.target,
        "bundle_id": bundle.bundle_id,
        "events": events,
        "artifacts": bundle.artifacts,
    }
    return orjson.dumps(data, default=_model_fields, option=_OPTIONS)


def entry_fields(
    bundle: Bundle | PlainBundle, token_label: str, received_at: float | None = None
) -> dict[bytes, bytes]:
    """The XADD field map of one bundle; same fields and bytes as ``storage.envelope.encode``."""
    try:
        body = bundle_json(bundle)
    except orjson.JSONEncodeError:
        # orjson.loads accepted the body (1024 levels) but writes at most 254; pydantic's
        # serializer gave up there as well (a 500 before), and no consumer could decode it.
        raise Unprocessable(
            "Bundle is nested too deeply to be stored.",
            errors=[{"loc": ["events"], "msg": "JSON nested deeper than 254 levels"}],
        ) from None
    stamp = time.time() if received_at is None else received_at
    return {
        b"v": _VERSION,
        b"bundle": body,
        b"received_at": repr(stamp).encode(),
        b"token": token_label.encode(),
    }


def event_json(event: WireEvent | dict[str, Any], index: int) -> bytes:
    """One validated event (a model, or a :class:`PlainBundle`'s dict) as it appears inside
    :func:`bundle_json`'s ``events`` array."""
    fields = event if type(event) is dict else event.__dict__
    try:
        return orjson.dumps(fields, option=_OPTIONS)
    except orjson.JSONEncodeError:
        raise Unprocessable(
            "Bundle is nested too deeply to be stored.",
            errors=[{"loc": ["events", index], "msg": "JSON nested deeper than 254 levels"}],
        ) from None


class ChunkWriter:
    """Event JSON in, bundle JSON of at most ``entry_max`` bytes per chunk out.

    Each chunk is the normalised JSON of ``header`` with a slice of the events, byte for
    byte what :func:`bundle_json` writes for that bundle; the artifacts ride on the first
    chunk only. Events are joined into a chunk as they arrive, so the caller can drop each
    event's models and JSON at once. One event larger than ``entry_max`` gets a chunk
    of its own.
    """

    def __init__(self, header: Bundle | PlainBundle, entry_max: int) -> None:
        self._head = orjson.dumps({"target": header.target, "bundle_id": header.bundle_id})
        self._head = self._head[:-1] + b',"events":['
        artifacts = header.artifacts
        first_tail = orjson.dumps(artifacts, default=_model_fields, option=_OPTIONS)
        self._tails = (b'],"artifacts":' + first_tail + b"}", b'],"artifacts":null}')
        self._room = entry_max - len(self._head) - len(self._tails[0])
        self._parts: list[bytes] = []
        self._size = 0
        self.chunks: list[bytes] = []

    def add(self, event: bytes) -> None:
        if self._parts and self._size + len(event) + 1 > self._room:
            self._flush()
        self._parts.append(event)
        self._size += len(event) + 1

    def finish(self) -> list[bytes]:
        if self._parts or not self.chunks:
            self._flush()
        return self.chunks

    def _flush(self) -> None:
        tail = self._tails[0] if not self.chunks else self._tails[1]
        self.chunks.append(self._head + b",".join(self._parts) + tail)
        self._parts, self._size = [], 0


def split_bundle(bundle: Bundle | PlainBundle, entry_max: int) -> list[bytes]:
    """The chunks of an already validated bundle (a few events that are large)."""
    writer = ChunkWriter(bundle, entry_max)
    events: Sequence[WireEvent | dict[str, Any]] = bundle.events
    for index, event in enumerate(events):
        writer.add(event_json(event, index))
    return writer.finish()


def chunk_fields(
    bundle_id: str, chunks: list[bytes], token_label: str, received_at: float | None = None
) -> list[dict[bytes, bytes]]:
    """The XADD field maps of a bundle split into ``chunks`` (one plain entry if only one)."""
    stamp = repr(time.time() if received_at is None else received_at).encode()
    token = token_label.encode()
    if len(chunks) == 1:
        return [{b"v": _VERSION, b"bundle": chunks[0], b"received_at": stamp, b"token": token}]
    total = str(len(chunks)).encode()
    ident = bundle_id.encode()
    return [
        {
            b"v": _CHUNKED_VERSION,
            b"bundle": chunk,
            b"received_at": stamp,
            b"token": token,
            b"bundle_id": ident,
            b"chunk": str(index).encode(),
            b"chunks": total,
        }
        for index, chunk in enumerate(chunks)
    ]
