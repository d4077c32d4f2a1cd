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
Every other payload value is free-form JSON. Lengths are in characters; what bounds the
keys in bytes (PostgreSQL's btree takes rows up to 2,704 bytes) is that 255 characters
are at most 1,020 bytes in UTF-8 and no index holds more than two such ids beside short
columns; the one key built from a longer value, the topology item, has a byte bound of
its own (:data:`storage.topology.MAX_ITEM_BYTES`).

Validation is one pass inside pydantic-core for a bundle that passes (every bundle ingest
accepts): the role-field bounds are a field of :class:`Bundle` read from the same
``events`` (constrained unions, no Python per event), and a timestamp already at offset
zero (``…Z``, what workers send) is taken natively, only other offsets and naive ones
calling :func:`to_utc`. A refused bundle's errors are named as the rules always named
them (:func:`_refused`): a failed timestamp by its :func:`to_utc` way alone, the role
fields only when nothing else failed, and then by the Python rules (:func:`roles_ok`, the
:class:`Payload` validators) — the 422s stay what they were.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    model_validator,
    with_config,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import CoreSchema, InitErrorDetails, PydanticCustomError, SchemaValidator
from pydantic_core import core_schema as cs
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


# Union labels of the timestamp's two ways (they appear in a failed union's error locs,
# which :func:`_exact_errors` rewrites to the one-way rule's)
_ZERO_TAG = "leviathan:offset-zero"
_TO_UTC_TAG = "leviathan:to-utc"
_ROLES_ERROR = "role_fields"


def _timestamp_schema(source: Any, handler: Any) -> CoreSchema:
    """A datetime already at offset zero natively, any other through :func:`to_utc`.

    ``…Z`` and ``+00:00`` parse to pydantic's zero-offset tzinfo, which :func:`to_utc`
    returns unchanged: the first choice skips a Python call per event for them. The
    second choice is the whole rule; a refused timestamp's error is its error alone.
    """
    exact = cs.no_info_after_validator_function(to_utc, cs.datetime_schema())
    return cs.union_schema(
        [(cs.datetime_schema(tz_constraint=0), _ZERO_TAG), (exact, _TO_UTC_TAG)],
        mode="left_to_right",
    )


Timestamp = Annotated[
    datetime,
    GetPydanticSchema(_timestamp_schema),
    WithJsonSchema({"type": "string", "format": "date-time"}),
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


def _role_id_schema() -> CoreSchema:
    """:func:`role_id`'s acceptance in pydantic-core: a str of at most 255 characters, an
    int within signed 64-bit (strict: never a bool or float), or null."""
    return cs.union_schema(
        [
            cs.str_schema(max_length=MAX_ID_LENGTH, strict=True),
            cs.int_schema(ge=INT64_MIN, le=INT64_MAX, strict=True),
            cs.none_schema(),
        ],
        mode="left_to_right",
    )


def _role_text_schema() -> CoreSchema:
    """:func:`role_text`'s acceptance for JSON values: a str of at most 255 characters, or
    any value that is not a str."""
    return cs.union_schema(
        [
            cs.str_schema(max_length=MAX_ID_LENGTH, strict=True),
            cs.none_schema(),
            cs.bool_schema(strict=True),
            cs.int_schema(strict=True),
            cs.float_schema(strict=True),
            cs.list_schema(cs.any_schema()),
            cs.dict_schema(cs.any_schema(), cs.any_schema(), strict=True),
        ],
        mode="left_to_right",
    )


def _roles_schema(source: Any, handler: Any) -> CoreSchema:
    """Every event's payload role fields checked in one native pass over ``events``.

    The field's value is always None (the small dicts the check builds are dropped at
    once). Any failure is one ``role_fields`` error: only a bundle with no other error
    gets its role fields named, as the Python rules always did (:func:`_exact_errors`).
    """
    fields = {
        **{k: cs.typed_dict_field(_role_id_schema(), required=False) for k in ROLE_IDS},
        **{k: cs.typed_dict_field(_role_text_schema(), required=False) for k in ROLE_TEXTS},
    }
    payload = cs.typed_dict_schema(fields, extra_behavior="ignore", total=False)
    event = cs.typed_dict_schema(
        {"payload": cs.typed_dict_field(payload, required=False)}, extra_behavior="ignore"
    )
    check = cs.no_info_after_validator_function(_nothing, cs.list_schema(event))
    return cs.custom_error_schema(
        check, _ROLES_ERROR, custom_error_message="role fields out of bounds"
    )


def _nothing(value: Any) -> None:
    return None


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
    # the role-field bounds, checked natively over the same "events" (always None; never
    # serialised, absent from the JSON schema)
    role_fields: SkipJsonSchema[Annotated[None, GetPydanticSchema(_roles_schema)]] = Field(
        default=None, validation_alias=AliasPath("events"), exclude=True, repr=False
    )

    @model_validator(mode="wrap")
    @classmethod
    def _one_pass(
        cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> Bundle:
        # A consumer decoding a stream entry skips the role check (STREAM_DECODE): ingest
        # checked the bundle, and the write paths store any JSON value in a role field, so
        # the check would only cost the drain
        decoding = info.context is not None and bool(info.context.get("stream_decode"))
        data = _plain_events(data)
        try:
            if decoding:
                return _decoder().validate_python(data)  # type: ignore[no-any-return]
            return handler(data)  # type: ignore[no-any-return]
        except ValidationError as exc:
            return _refused(data, exc)


_PLAIN = frozenset({dict})


def _plain_events(data: Any) -> Any:
    """A bundle built in Python from :class:`WireEvent` objects (benchmarks, tools), with
    the events as the mappings the role check reads; anything else as it is."""
    if isinstance(data, dict):
        events = data.get("events")
        if (
            isinstance(events, list)
            # parsed JSON holds plain dicts only: one pass in C, not a generator per event
            and not _PLAIN.issuperset(map(type, events))
            and any(isinstance(ev, WireEvent) for ev in events)
        ):
            plain = [ev.model_dump() if isinstance(ev, WireEvent) else ev for ev in events]
            return {**data, "events": plain}
    return data


_DECODER: list[SchemaValidator] = []


def _decoder() -> SchemaValidator:
    """Bundle's model schema with the role check left out (``role_fields`` is None)."""
    if not _DECODER:
        schema: Any = Bundle.__pydantic_core_schema__
        assert schema["type"] == "function-wrap", schema["type"]
        model = dict(schema["schema"])
        fields = dict(model["schema"]["fields"])
        neutral = cs.with_default_schema(cs.none_schema(), default=None, on_error="default")
        fields["role_fields"] = {**fields["role_fields"], "schema": neutral}
        model["schema"] = {**model["schema"], "fields": fields}
        _DECODER.append(SchemaValidator(model))
    return _DECODER[0]


def _exact_errors(exc: ValidationError) -> list[Any]:
    """The errors of a refused bundle as the one-way rules give them: a failed timestamp
    union's error is its :func:`to_utc` way's; the role check's error is left out."""
    out: list[Any] = []
    for e in exc.errors(include_url=False):
        loc = e["loc"]
        if e["type"] == _ROLES_ERROR or _ZERO_TAG in loc:
            continue
        if _TO_UTC_TAG in loc:
            loc = tuple(part for part in loc if part != _TO_UTC_TAG)
        detail: dict[str, Any] = {"type": e["type"], "loc": loc, "input": e["input"]}
        if "ctx" in e:
            detail["ctx"] = e["ctx"]
        out.append(detail)
    return out


def _payloads(data: Any) -> list[Any]:
    events = data["events"] if isinstance(data, dict) else data.events
    return [ev.payload if isinstance(ev, WireEvent) else ev["payload"] for ev in events]


def _refused(data: Any, exc: ValidationError) -> Bundle:
    """What the one-pass validation refused, named as the rules always named it.

    Errors other than the role check's are raised as they are (a bundle with such errors
    never had its role fields checked). Otherwise the role check alone failed: the Python
    rules (:func:`roles_ok`, then the :class:`Payload` validators) name each field. A
    bundle they accept (events given as models, which the native check takes only as
    dicts) is validated without the role check.
    """
    errors = _exact_errors(exc)
    if errors:
        raise ValidationError.from_exception_data(exc.title, errors)
    payloads = _payloads(data)
    if not roles_ok(payloads):
        _ROLES.validate_python({"events": [{"payload": p} for p in payloads]})
    return _decoder().validate_python(data)  # type: ignore[no-any-return]


_EVENTS = TypeAdapter(list[WireEvent])


def validate_events(items: Any) -> list[WireEvent]:
    """A list of events on their own (a chunk of a large bundle), a refused one's errors
    named as the one-way timestamp rule names them (as :class:`Bundle` does)."""
    try:
        return _EVENTS.validate_python(items)
    except ValidationError as exc:
        raise ValidationError.from_exception_data(exc.title, _exact_errors(exc)) from None


def check_roles(events: Sequence[WireEvent]) -> None:
    """The role-field bounds of a chunk of events :func:`validate_events` accepted (which
    leaves them out, as ``Bundle`` does when it validates events alone); a failure names
    each field as ``(i, "payload", key)``, ``i`` the event's index in the chunk."""
    payloads = [ev.payload for ev in events]
    if roles_ok(payloads):
        return
    try:
        _ROLES.validate_python({"events": [{"payload": p} for p in payloads]})
    except ValidationError as exc:
        # every role error is a PydanticCustomError (role_id, role_text); the loc loses the
        # wrapper's "events": (i, "payload", key)
        errors: list[InitErrorDetails] = [
            {
                "type": PydanticCustomError(e["type"], e["msg"]),
                "loc": e["loc"][1:],
                "input": e["input"],
            }
            for e in exc.errors(include_url=False)
        ]
        raise ValidationError.from_exception_data(exc.title, errors) from None


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
