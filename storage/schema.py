"""Wire models of the ingest contract (README, "The contract"), shared by both tiers.

Pipeline position: ingest validates request bodies with these models before anything is
queued; the consumer re-reads them from stream envelopes; storage turns them into stored
events. They are the single definition of what a valid bundle is.

Normalisation happens here, once: timestamps become UTC strings in one fixed format
(``2026-11-28T12:00:00Z``, microseconds only when present) so the canonical JSON that the
hash chain covers is the same whichever tier computes it.

Whatever these models accept, both backends can store (docs/design-notes.md, "Field
bounds"): typed integers stay within signed 64-bit, timestamps within years 1-9999 after
conversion to UTC, and the payload fields that name graph nodes or index events
(:data:`ROLE_IDS`, :data:`ROLE_TEXTS`) have the types and lengths the backends' keys take.
Every other payload value is free-form JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationInfo,
    model_validator,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

_ZERO = timedelta(0)
MAX_ID_LENGTH = 255
MAX_EVENT_TYPE_LENGTH = 100
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def to_utc(value: datetime) -> datetime:
    """Naive timestamps mean UTC; aware ones are converted to UTC."""
    tz = value.tzinfo
    if tz is None:
        return value.replace(tzinfo=UTC)
    if tz is UTC:
        return value  # already converted at validation; astimezone is costly per event
    if tz.utcoffset(value) == _ZERO:
        # pydantic parses "…Z" with its own zero-offset tzinfo: the instant and every text
        # form of it (isoformat, orjson OPT_UTC_Z) are already UTC's, and astimezone
        # through that tzinfo was ~7% of the ingest's CPU (once per event)
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:30+01:00 is in year 0 in UTC, 9999-12-31T23:30-01:00 in 10000
        raise ValueError("timestamp is outside the years 1-9999 once converted to UTC") from None


def format_timestamp(value: datetime) -> str:
    """The one textual form of a timestamp used in envelopes, storage and hashes."""
    text = to_utc(value).isoformat()
    return text.removesuffix("+00:00") + "Z"


def is_normalised(text: Any) -> bool:
    """Whether a timestamp text that parses is already what :func:`format_timestamp` writes.

    ``YYYY-MM-DDTHH:MM:SSZ``, or with six fraction digits that are not all zero. The
    consumer keeps such texts (every entry ingest wrote) instead of formatting the parsed
    datetime again, which costs ~0.9 µs per event, mostly in pydantic's tzinfo.
    """
    if type(text) is not str:
        return False
    n = len(text)
    if n == 27:
        if text[19] != "." or text[26] != "Z" or text[20:26] == "000000":
            return False
    elif n != 20 or text[19] != "Z":
        return False
    return text[10] == "T" and text[4] == text[7] == "-" and text[13] == text[16] == ":"


def parse_timestamp(text: str) -> datetime:
    """Inverse of :func:`format_timestamp` (also accepts any ISO 8601 form)."""
    return to_utc(datetime.fromisoformat(text))


Timestamp = Annotated[
    datetime,
    AfterValidator(to_utc),
    PlainSerializer(format_timestamp, return_type=str, when_used="always"),
]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]
EventType = Annotated[str, StringConstraints(min_length=1, max_length=MAX_EVENT_TYPE_LENGTH)]


def role_id(value: Any) -> Any:
    """A payload field that names a graph node or indexes the event: a string of at most
    :data:`MAX_ID_LENGTH` characters, an integer within signed 64-bit, or null. Returned
    unchanged (the payload is stored exactly as sent)."""
    kind = type(value)
    if kind is str:
        if len(value) <= MAX_ID_LENGTH:
            return value
        raise PydanticCustomError(
            "role_id_too_long", "must be at most {max} characters", {"max": MAX_ID_LENGTH}
        )
    if kind is int:
        if INT64_MIN <= value <= INT64_MAX:
            return value
        raise PydanticCustomError("role_id_range", "integer must be within signed 64-bit")
    if value is None:
        return value
    raise PydanticCustomError("role_id_type", "must be a string, an integer or null")


def role_text(value: Any) -> Any:
    """A payload field the projection reads only when it is a string (a status, a node's
    target, an artifact's sha256): strings are bounded like ids, other values pass."""
    if type(value) is str and len(value) > MAX_ID_LENGTH:
        raise PydanticCustomError(
            "role_text_too_long", "must be at most {max} characters", {"max": MAX_ID_LENGTH}
        )
    return value


RoleId = Annotated[Any, PlainValidator(role_id)]
RoleText = Annotated[Any, PlainValidator(role_text)]
ROLE_IDS = ("attempt_id", "task_id", "target_id", "artifact_id", "pr_number")
ROLE_TEXTS = ("status", "target", "sha256")
_ROLE_KEYS = frozenset(ROLE_IDS) | frozenset(ROLE_TEXTS)
_TEXT_KEYS = frozenset(ROLE_TEXTS)


def roles_ok(payloads: Iterable[Mapping[str, Any]]) -> bool:
    """Whether every payload's role fields pass :func:`role_id`/:func:`role_text`.

    The same rules inline, over a whole bundle in one call: the usual bundle passes at a
    quarter of the cost of validating each payload as :class:`Payload` (a Python call per
    role field), which only runs to name what failed.
    """
    keys, texts = _ROLE_KEYS, _TEXT_KEYS
    for payload in payloads:
        for key in payload.keys() & keys:
            value = payload[key]
            kind = type(value)
            if kind is str:
                if len(value) <= MAX_ID_LENGTH:
                    continue
            elif key in texts or value is None or (kind is int and INT64_MIN <= value <= INT64_MAX):
                continue
            return False
    return True


# orjson writes U+0000 as this escape; a body or entry without it holds no NUL anywhere
NUL_ESCAPE = b"\\u0000"


def _children(value: Any) -> Iterator[tuple[int | str, Any]]:
    return iter(value.items()) if isinstance(value, dict) else enumerate(value)


def nul_locations(value: Any, loc: tuple[int | str, ...] = ()) -> Iterator[list[int | str]]:
    """Where a string (key or value) of a parsed JSON document holds U+0000.

    PostgreSQL's text and jsonb cannot store it, so such an event could never be committed
    there and would block its batch until dead-lettered; ingest rejects it (422) for every
    backend so both store the same events, and a consumer dead-letters an entry holding it.
    Callers run this walk only when the raw bytes contain :data:`NUL_ESCAPE`.

    Iterative, in document order, with one iterator per open container: a document nested
    as deep as orjson parses (1,024 levels) would pass Python's recursion limit.
    """
    if isinstance(value, str):
        if "\x00" in value:
            yield list(loc)
        return
    if not isinstance(value, dict | list | tuple):
        return
    stack = [(_children(value), loc)]
    while stack:
        items, where = stack[-1]
        step = next(items, None)
        if step is None:
            stack.pop()
            continue
        key, item = step
        here = (*where, key)
        if isinstance(key, str) and "\x00" in key:
            yield list(here)
        if isinstance(item, str):
            if "\x00" in item:
                yield list(here)
        elif isinstance(item, dict | list | tuple):
            stack.append((_children(item), here))


@with_config(ConfigDict(extra="allow"))
class Payload(TypedDict, total=False):
    """An event's payload: any JSON object; the role fields checked where present (an
    error's loc then names the field, e.g. ``["events", 3, "payload", "attempt_id"]``)."""

    attempt_id: RoleId
    task_id: RoleId
    target_id: RoleId
    artifact_id: RoleId
    pr_number: RoleId
    status: RoleText
    target: RoleText
    sha256: RoleText


class WireEvent(BaseModel):
    """One event as workers send it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Identifier
    event_type: EventType
    timestamp: Timestamp
    actor_id: Annotated[str, StringConstraints(max_length=MAX_ID_LENGTH)] | None = None
    payload: dict[str, Any]  # role fields checked per bundle (Bundle._role_fields)


class WireArtifact(BaseModel):
    """A bundle-level artifact reference; extra keys are kept (workers add their own)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    sha256: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    kind: Annotated[str, StringConstraints(max_length=MAX_EVENT_TYPE_LENGTH)] | None = None
    uri: Annotated[str, StringConstraints(max_length=4096)] | None = None
    size: Annotated[int, Field(ge=0, le=INT64_MAX)] | None = None


@with_config(ConfigDict(extra="allow"))
class _EventRoles(TypedDict):
    payload: Payload


class _BundleRoles(TypedDict):
    events: list[_EventRoles]


# names each failing role field as ("events", i, "payload", key) in the bundle's errors
_ROLES = TypeAdapter(_BundleRoles)


# validation context of a bundle read back from a stream entry (storage.envelope.decode)
STREAM_DECODE: dict[str, bool] = {"stream_decode": True}


class Bundle(BaseModel):
    """The body of ``POST /v1/events/ingest``; unknown top-level keys are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    target: Identifier
    bundle_id: Identifier
    events: list[WireEvent]
    artifacts: list[WireArtifact] | None = None

    @model_validator(mode="after")
    def _role_fields(self, info: ValidationInfo) -> Bundle:
        # runs once the fields are valid: a bundle with other errors reports those first.
        # A consumer decoding a stream entry skips it (STREAM_DECODE): ingest checked the
        # bundle, and the write paths store any JSON value in a role field, so the check
        # would only cost the drain ~1 µs per event
        if info.context is not None and info.context.get("stream_decode"):
            return self
        if not roles_ok(ev.payload for ev in self.events):
            _ROLES.validate_python({"events": [{"payload": ev.payload} for ev in self.events]})
        return self


def bundle_attempt(bundle: Bundle) -> str | None:
    """The attempt a bundle's artifacts belong to: the one attempt_id its events name
    (string and integer ids; none when they name several or none)."""
    ids = set()
    for ev in bundle.events:
        value = ev.payload.get("attempt_id")
        if type(value) is str or type(value) is int:
            ids.add(str(value))
    return ids.pop() if len(ids) == 1 else None


def artifact_id_of(extra: dict[str, Any] | None, sha256: str) -> str:
    """A bundle artifact's id: its extra ``artifact_id`` when that is a usable id (a
    string of 1-255 characters), else its sha256."""
    value = (extra or {}).get("artifact_id")
    return value if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH else sha256


class InvalidateRequest(BaseModel):
    """Body of ``POST /v1/attempts/{id}/invalidate``."""

    model_config = ConfigDict(extra="ignore")

    reason: Annotated[str, StringConstraints(min_length=1, max_length=4096, strip_whitespace=True)]
