"""Today's wire models as they were before validation moved into pydantic-core: the
reference the equivalence tests compare :mod:`storage.schema` with.

A frozen copy (role fields checked by a Python walk after validation, UTC normalisation in
an after-validator); never import it outside tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
