"""Payload fidelity through every backend: what was hashed is what verify re-reads.

Conformance (both backends, through the consumer's decode path): numbers JSON text can
spell several ways (exponents, trailing ``.0``, 20-digit integers, ``-0.0``) come back
byte-identical under :func:`storage.chain.payload_json`, so the chain verifies and
readers see the values that were sent. What no backend can store (U+0000 anywhere, an
integer beyond 64 bits in an in-process bundle) is refused when the entry is decoded —
dead-lettered at once by the consumer — instead of failing its batch on every retry. The
decoder parses entries as ingest parses bodies (orjson), so every nesting depth ingest
accepts is stored too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.base import EventStore
from storage.chain import payload_json
from storage.envelope import Envelope, EnvelopeError, decode, encode, payloads_of
from storage.schema import Bundle, format_timestamp, is_normalised
from tests import factories as f

AWKWARD_PAYLOADS: list[dict[str, Any]] = [
    {"big": 1e20, "one": 1.0, "huge": 12345678901234567890, "tiny": 1e-7, "x": 1.5e300},
    {"neg_zero": -0.0, "sub": 5e-324, "sum": 0.1 + 0.2, "neg": -(2**63), "max": 2**64 - 1},
    {"nested": {"b": [1.0, -0.0, {"z": 1e-300}], "a": 'é ✓ 🐍 \u2028 \\ "'}, "": None},
]


def entry(raw: dict[str, Any], n: int) -> tuple[str, dict[bytes, bytes]]:
    """A stream entry exactly as ingest XADDs it (the validated bundle, orjson-encoded)."""
    return f"{n}-0", encode(Bundle.model_validate(raw), "test", received_at=1_764_320_000.0 + n)


def decoded(raw: dict[str, Any], n: int = 0) -> Envelope:
    return decode(*entry(raw, n))


@pytest.mark.parametrize("payload", AWKWARD_PAYLOADS, ids=["exponents", "zero-edge", "nested"])
async def test_awkward_numbers_verify_and_read_back_exactly(
    store: EventStore, payload: dict[str, Any]
) -> None:
    events = [f.event("metric.recorded", payload, at=i) for i in range(3)]
    result = await store.write_batch(0, [decoded(f.body("repo-a", "bundle-nums", events))])
    assert result.written == 3
    status = await store.verify_chain(0)
    assert status.ok, status
    assert status.checked == 3
    stored = [ev async for ev in store.iter_events(0)]
    assert [payload_json(ev.payload) for ev in stored] == [payload_json(payload)] * 3
    # a second delivery of the same entry is a duplicate, not a revision
    again = await store.write_batch(0, [decoded(f.body("repo-a", "bundle-nums", events), 1)])
    assert (again.written, again.duplicates, again.revisions) == (0, 3, 0)


@pytest.mark.parametrize(
    ("where", "raw"),
    [
        (
            "bundle.events[0].payload.note",
            f.body("repo-a", "b-nul", [f.event("note", {"note": "a\x00b"})]),
        ),
        (
            "bundle.events[0].payload.'k\\x00'",
            f.body("repo-a", "b-nul", [f.event("note", {"k\x00": 1})]),
        ),
        (
            "bundle.events[0].event_id",
            f.body("repo-a", "b-nul", [f.event("note", {}, event_id="e\x00")]),
        ),
        ("bundle.target", f.body("repo\x00", "b-nul", [f.event("note", {})])),
    ],
    ids=["payload-value", "payload-key", "event-id", "target"],
)
async def test_nul_refused_at_decode_for_every_backend(
    store: EventStore, where: str, raw: dict[str, Any]
) -> None:
    with pytest.raises(EnvelopeError) as info:
        decoded(raw)
    assert "NUL" in str(info.value)
    assert where in str(info.value)
    # the rest of the stream still flows and stores
    ok = f.body("repo-a", "b-ok", [f.event("note", {"note": "fine"})])
    assert (await store.write_batch(0, [decoded(ok, 1)])).written == 1
    assert await store.count_events() == 1


def test_integer_beyond_64_bits_decodes_as_ingest_parses_it() -> None:
    # the decoder parses like ingest (orjson): such an integer becomes a float, which every
    # backend can hash and store, so an entry XADDed by another producer is not refused
    fields = {
        b"v": b"1",
        b"received_at": b"1764320000.0",
        b"token": b"test",
        b"bundle": b'{"target":"t","bundle_id":"b","events":[{"event_id":"e","event_type":"x",'
        b'"timestamp":"2026-11-28T09:00:00Z","payload":{"n":123456789012345678901234567890}}]}',
    }
    envelope = decode("1-0", fields)
    assert envelope.bundle.events[0].payload == {"n": 1.2345678901234568e29}
    assert envelope.payloads == (b'{"n":1.2345678901234568e+29}',)


def test_payload_orjson_cannot_write_is_refused() -> None:
    # an envelope built in process (not parsed from JSON) can still hold such an integer
    bundle = Bundle.model_validate(
        f.body("repo-a", "bundle-big", [f.event("metric.recorded", {"n": 2**70})])
    )
    with pytest.raises(EnvelopeError, match="cannot be stored"):
        payloads_of(bundle)


def test_decode_keeps_the_payload_bytes_the_chain_hashes() -> None:
    raw = f.body("repo-a", "b", [f.event("x", {"b": 1.0, "a": [-0.0, 1e20]})])
    env = decoded(raw)
    assert env.payloads == (b'{"a":[-0.0,1e+20],"b":1.0}',)


TIMESTAMP_SPELLINGS: dict[str, Callable[[datetime], str]] = {
    "normalised": format_timestamp,
    "offset": lambda d: d.isoformat(),
    "fraction": lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    "zero-fraction": lambda d: d.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    "milliseconds": lambda d: d.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    "lower-case": lambda d: format_timestamp(d).replace("T", "t").replace("Z", "z"),
    "other-zone": lambda d: d.astimezone(timezone(timedelta(hours=-5))).isoformat(),
    "naive": lambda d: d.replace(tzinfo=None).isoformat(),
}


@settings(max_examples=200, deadline=None)
@given(
    instant=st.datetimes(
        min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    spelling=st.sampled_from(sorted(TIMESTAMP_SPELLINGS)),
)
def test_decoded_timestamp_text_is_the_normalised_form(instant: datetime, spelling: str) -> None:
    """Decode keeps a sent text only when it already is format_timestamp's form."""
    text = TIMESTAMP_SPELLINGS[spelling](instant)
    raw = {"target": "t", "bundle_id": "b", "events": [f.event("x", {}) | {"timestamp": text}]}
    fields = {b"v": b"1", b"bundle": orjson.dumps(raw), b"received_at": b"1.0", b"token": b"t"}
    env = decode("1-0", fields)
    (parsed,) = (ev.timestamp for ev in env.bundle.events)
    assert env.timestamps == (format_timestamp(parsed),)
    assert is_normalised(text) == (text == format_timestamp(parsed))


async def test_deeply_nested_payload_is_stored_and_verifies(store: EventStore) -> None:
    # 240 levels below the payload: past the 200 of pydantic's JSON parser (which the
    # decoder used, dead-lettering such bundles after ingest had answered 202), within
    # the 254 that orjson writes
    payload = f.nested(240, {})
    raw = f.body("repo-a", "bundle-deep", [f.event("metric.recorded", payload)])
    result = await store.write_batch(0, [decoded(raw)])
    assert result.written == 1
    assert (await store.verify_chain(0)).ok
    [stored] = [ev async for ev in store.iter_events(0)]
    assert payload_json(stored.payload) == payload_json(payload)


# Every character the COPY text format and NDJSON give a meaning to, and more.
AWKWARD_TEXT = 'tab\there \\N line\nCR\r back\\slash \\. "q" é 🐍 \u2028'


async def test_awkward_strings_read_back_exactly_from_every_column(store: EventStore) -> None:
    text = AWKWARD_TEXT
    payload = {text: [text, {"k": text}], "task_id": f"t {text}", "attempt_id": f"a {text}"}
    raw = f.body(
        f"repo {text}",
        f"bundle {text}",
        [f.event(f"note {text}", payload, event_id=f"e {text}", actor_id=f"actor {text}")],
    )
    assert (await store.write_batch(0, [decoded(raw)])).written == 1
    assert (await store.verify_chain(0)).ok
    [ev] = [ev async for ev in store.iter_events(0)]
    assert (ev.event_id, ev.event_type, ev.actor_id, ev.target, ev.bundle_id) == (
        f"e {text}", f"note {text}", f"actor {text}", f"repo {text}", f"bundle {text}"
    )  # fmt: skip
    assert payload_json(ev.payload) == payload_json(payload)
    # the filter columns were stored as the same strings
    filters: list[dict[str, str]] = [
        {"task_id": f"t {text}"}, {"attempt_id": f"a {text}"}, {"target": f"repo {text}"},
        {"event_type": f"note {text}"},
    ]  # fmt: skip
    for where in filters:
        page = await store.list_events(**where)  # type: ignore[arg-type]
        assert [e.event_id for e in page.items] == [f"e {text}"], where
