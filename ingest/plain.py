"""A parsed body validated into plain dicts, the ingest's fast path (docs/design-notes.md).

Pipeline position: ``ingest.body`` tries this first on every bundle of up to
``CHUNK_EVENTS`` events, between ``orjson.loads`` and the entry encoder
(:mod:`ingest.entry`); a body it refuses is validated again as
:class:`storage.schema.Bundle`, which accepts it or names its errors, so a 422 (and
whatever else the model decides) stays the model's.

The validator is :class:`~storage.schema.Bundle`'s own pydantic-core schema with the two
model layers turned into typed dicts over the same field schemas (same bounds, the same
timestamp union and role-field check): what it accepts, the model accepts, with the same
normalised values. It skips what only the model needs: a model instance, its fields set and
the wrap validator's Python call per bundle, ~7 µs of a 20-event bundle. Each payload is
kept as parsed instead of copied (the model's ``dict[str, Any]`` with ``str`` keys accepts
every JSON object as it is), ~4 µs more. Only for parsed JSON: keys and values are what
``orjson.loads`` makes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import CoreSchema, SchemaValidator
from pydantic_core import core_schema as cs

from storage.schema import Bundle, WireArtifact

# what WireEvent.payload's schema must be for a parsed payload to be kept as it is
_PAYLOAD = {"type": "dict", "keys_schema": {"type": "str"}, "values_schema": {"type": "any"}}


@dataclass(slots=True)
class PlainBundle:
    """A validated bundle: the fields :class:`~storage.schema.Bundle` would hold, each
    event the dict of its fields in the model's order (its ``__dict__``)."""

    target: str
    bundle_id: str
    events: list[dict[str, Any]]
    artifacts: list[WireArtifact] | None


def _fields(model: Any) -> dict[str, Any]:
    """A model schema's fields as typed-dict fields (same schemas, same aliases)."""
    assert model["type"] == "model", model["type"]
    out: dict[str, Any] = {}
    for name, field in model["schema"]["fields"].items():
        typed: dict[str, Any] = {"type": "typed-dict-field", "schema": field["schema"]}
        if "validation_alias" in field:
            typed["validation_alias"] = field["validation_alias"]
        out[name] = typed
    return out


def _schema() -> CoreSchema:
    wrap: Any = Bundle.__pydantic_core_schema__
    assert wrap["type"] == "function-wrap", wrap["type"]
    bundle = _fields(wrap["schema"])
    events = bundle["events"]["schema"]
    assert events["type"] == "list", events["type"]
    event = _fields(events["items_schema"])
    assert event["payload"]["schema"] == _PAYLOAD, event["payload"]["schema"]
    event["payload"] = cs.typed_dict_field(cs.is_instance_schema(dict))
    item = cs.typed_dict_schema(event, extra_behavior="ignore")
    bundle["events"] = cs.typed_dict_field(cs.list_schema(item))
    return cs.typed_dict_schema(bundle, extra_behavior="ignore")


_VALIDATOR = SchemaValidator(_schema())


def validate_plain(obj: Any) -> PlainBundle | None:
    """``obj`` (parsed JSON) validated, or None when :class:`Bundle` must decide."""
    try:
        out = _VALIDATOR.validate_python(obj)
    except ValidationError:
        return None
    return PlainBundle(out["target"], out["bundle_id"], out["events"], out["artifacts"])
