"""Stream entry codec: what ingest XADDs and the consumer XREADGROUPs (DESIGN §3).

Pipeline position: the only format shared by the two tiers through Redis. An entry is a
flat field map ``{v, bundle, received_at, token}``; ``bundle`` holds the normalised bundle
as orjson/pydantic JSON bytes. ``v`` versions the layout so a consumer can refuse (and
dead-letter) an entry written by a newer ingest instead of misreading it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pydantic import ValidationError

from storage.schema import Bundle

ENVELOPE_VERSION = 1
SUPPORTED_VERSIONS = frozenset({ENVELOPE_VERSION})


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
    try:
        bundle = Bundle.model_validate_json(_text(fields, b"bundle"))
    except ValidationError as exc:
        raise EnvelopeError(f"envelope bundle invalid: {exc.error_count()} error(s)") from None
    token = _text(fields, b"token").decode("utf-8", errors="replace")
    return Envelope(bundle=bundle, received_at=received_at, token_label=token, entry_id=entry_id)
