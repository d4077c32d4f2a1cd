"""Bundle bodies: JSON encoding, gzip, and splitting a bundle over the server's limits.

Pipeline position: between the caller's ``send``/``post`` and the transport. A bundle is
encoded once, when it is queued (later changes to the caller's dict cannot leak into it),
and split there when it exceeds what one ``POST /v1/events/ingest`` may carry: 64 MiB of
JSON after decompression and 100,000 events (the README's 413). The parts get derived
bundle ids (``<id>~1of3``, …); a bundle id is only a label on the server (``event_id`` and
content are the idempotency key), so splitting never changes what gets stored.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any, Protocol

from leviathan_client.errors import BundleTooLarge, InvalidBundle

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_EVENTS = 100_000
MAX_ID_LENGTH = 255
GZIP_THRESHOLD = 64 * 1024
"""Bodies at least this long are gzipped when gzip is on: below it compression costs more
CPU than it saves on a loopback or LAN link."""


class SupportsToDict(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


BundleLike = Mapping[str, Any] | SupportsToDict


def _default(value: object) -> Any:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return aware.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> bytes:
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, default=_default, allow_nan=False
    ).encode()


def as_mapping(bundle: BundleLike) -> dict[str, Any]:
    """A plain dict of a bundle (a mapping, or a :class:`leviathan_client.events.Bundle`)."""
    if isinstance(bundle, Mapping):
        raw = dict(bundle)
    elif callable(getattr(bundle, "to_dict", None)):
        raw = bundle.to_dict()
    else:
        raise InvalidBundle(f"a bundle is a JSON object, not {type(bundle).__name__}")
    events = raw.get("events")
    if not isinstance(raw.get("bundle_id"), str) or not isinstance(raw.get("target"), str):
        raise InvalidBundle("a bundle needs a string 'target' and 'bundle_id'")
    if not isinstance(events, list | tuple):
        raise InvalidBundle("a bundle needs an 'events' list")
    raw["events"] = list(events)
    return raw


def part_id(bundle_id: str, index: int, count: int) -> str:
    """The derived id of part ``index`` (0-based) of ``count``, at most 255 characters."""
    suffix = f"~{index + 1}of{count}"
    if len(bundle_id) + len(suffix) > MAX_ID_LENGTH:
        digest = hashlib.sha256(bundle_id.encode()).hexdigest()[:16]
        bundle_id = f"{bundle_id[: MAX_ID_LENGTH - len(suffix) - 17]}-{digest}"
    return bundle_id + suffix


def split(
    raw: dict[str, Any], max_events: int = MAX_EVENTS, max_bytes: int = MAX_BODY_BYTES
) -> list[bytes]:
    """The encoded body, or the bodies of its parts when it is over either limit.

    Events keep their order; the bundle's ``artifacts`` travel with the first part.
    """
    try:
        body = dumps(raw)
    except (TypeError, ValueError) as exc:  # a set, an object, NaN: not JSON
        raise InvalidBundle(f"the bundle cannot be encoded as JSON: {exc}") from None
    events: list[Any] = raw["events"]
    if len(events) <= max_events and len(body) <= max_bytes:
        return [body]
    shell = {k: v for k, v in raw.items() if k != "events"}
    # room for the id suffix, the events array's brackets and commas
    overhead = len(dumps({**shell, "events": []})) + 32
    groups: list[list[Any]] = [[]]
    size = overhead
    for event in events:
        n = len(dumps(event)) + 1
        if overhead + n > max_bytes:
            raise BundleTooLarge(f"one event is {n:,} bytes, over the {max_bytes:,}-byte limit")
        if len(groups[-1]) >= max_events or size + n > max_bytes:
            groups.append([])
            size = overhead
        groups[-1].append(event)
        size += n
    bodies = []
    for i, group in enumerate(groups):
        part = {**shell, "bundle_id": part_id(raw["bundle_id"], i, len(groups)), "events": group}
        if i and "artifacts" in part:
            del part["artifacts"]
        bodies.append(dumps(part))
    return bodies


def compress(body: bytes, enabled: bool, threshold: int = GZIP_THRESHOLD) -> tuple[bytes, bool]:
    """``(data, gzipped)``: gzip level 1 for bodies of at least ``threshold`` bytes."""
    if enabled and len(body) >= threshold:
        return gzip.compress(body, compresslevel=1), True
    return body, False
