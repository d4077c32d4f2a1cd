"""Validated bundle → stream entry fields, the ingest's fast path (DESIGN §3).

Pipeline position: between validation (``ingest.body``) and the group-commit XADD
(``ingest.publisher``). It produces exactly the field map of ``storage.envelope.encode``
(``{v, bundle, received_at, token}``, ``bundle`` = the normalised bundle as JSON bytes) but
serialises with orjson from the validated model's attributes instead of pydantic's
``model_dump_json``: that one calls the Python timestamp serializer once per event and was
the largest single cost of the ingest path after validation itself (about 50 µs of a
20-event bundle vs 18 µs here). Validated timestamps are already UTC, and orjson's
``OPT_UTC_Z`` writes them in the same text as ``storage.schema.format_timestamp``
(``…Z``, microseconds only when non-zero); tests compare the bytes with
``model_dump_json`` over generated bundles.
"""

from __future__ import annotations

import time

import orjson

from ingest.errors import Unprocessable
from storage.envelope import ENVELOPE_VERSION
from storage.schema import Bundle

_VERSION = str(ENVELOPE_VERSION).encode()
_OPTIONS = orjson.OPT_UTC_Z


def bundle_json(bundle: Bundle) -> bytes:
    """The normalised bundle as JSON bytes, identical to ``bundle.model_dump_json()``."""
    artifacts = bundle.artifacts
    doc = {
        "target": bundle.target,
        "bundle_id": bundle.bundle_id,
        "events": [
            {
                "event_id": e.event_id,
                "event_type": e.event_type,
                "timestamp": e.timestamp,
                "actor_id": e.actor_id,
                "payload": e.payload,
            }
            for e in bundle.events
        ],
        # Rare and small; pydantic keeps their extra keys and coerced sizes as it would.
        "artifacts": None if artifacts is None else [a.model_dump(mode="json") for a in artifacts],
    }
    return orjson.dumps(doc, option=_OPTIONS)


def entry_fields(
    bundle: Bundle, token_label: str, received_at: float | None = None
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
