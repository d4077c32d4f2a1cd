"""The client's event vocabulary against what the projection and topology index act on.

The set of event types comes from the server's own dispatch tables
(``storage.projection.PROJECTED_TYPES``, ``storage.topology.TOPOLOGY_TYPES``), so a type
added there without a builder and a section in docs/events.md fails here.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from leviathan_client import events
from leviathan_client.vocabulary import BY_TYPE, SPECS, EventSpec, render

from storage import projection, topology
from storage.chain import digest_of
from storage.projection import ATTEMPT, PROJECTED_TYPES, TARGET, TASK, fold
from storage.schema import Bundle
from storage.topology import TOPOLOGY_TYPES, row_of

ROOT = Path(__file__).resolve().parents[2]
ACTED_ON = PROJECTED_TYPES | TOPOLOGY_TYPES
EVENT_TYPE = re.compile(r"[a-z]+(?:\.[a-z_]+)+")


def test_every_type_the_server_acts_on_has_a_builder_and_no_other() -> None:
    assert set(BY_TYPE) == ACTED_ON
    assert len(SPECS) == len(BY_TYPE)


def _type_literals(module: ModuleType) -> set[str]:
    """String constants shaped like an event type (``word.word…``) in a module's code."""
    tree = ast.parse(inspect.getsource(module))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and EVENT_TYPE.fullmatch(node.value)
    }


def test_the_dispatch_constants_name_every_type_the_code_compares_with() -> None:
    # a type handled by a new branch of the fold but missing from PROJECTED_TYPES (or
    # TOPOLOGY_TYPES) would escape the check above: every literal must be in the sets
    literals = _type_literals(projection) | _type_literals(topology)
    assert literals == ACTED_ON


def test_docs_events_md_is_generated_from_the_client() -> None:
    text = (ROOT / "docs" / "events.md").read_text()
    assert text == render(), "regenerate: python -m leviathan_client.vocabulary > docs/events.md"
    sections = set(re.findall(r"^## `([^`]+)`$", text, flags=re.MULTILINE))
    assert sections == ACTED_ON


class _Stored:
    """What the fold reads of a stored event, made from a validated wire event."""

    def __init__(self, raw: dict[str, Any], target: str) -> None:
        self.event_id = raw["event_id"]
        self.event_type = raw["event_type"]
        self.timestamp = raw["timestamp"]
        self.payload = raw["payload"]
        self.target = target
        self.digest = digest_of(self.event_type, self.timestamp, None, self.payload)


def _built(spec: EventSpec) -> dict[str, Any]:
    args: dict[str, Any] = {name: f"{name}-1" for name in spec.required}
    if "attempt_id" in spec.fields:
        args["attempt_id"] = "att-1"
    if "depends_on" in spec.fields:
        args["depends_on"] = ["task-0"]
    made = events.bundle("repo", [spec.builder(**args)], bundle_id="b").to_dict()
    return Bundle.model_validate(made).model_dump(mode="json")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.event_type)
def test_a_built_event_is_valid_and_does_what_the_docs_say(spec: EventSpec) -> None:
    wire = _built(spec)
    raw = wire["events"][0]
    if spec.event_type in TOPOLOGY_TYPES:
        row = row_of(
            raw["event_type"], raw["event_id"], raw["timestamp"], None, raw["payload"], "r"
        )
        assert row is not None
        assert not row.item.startswith("event:")  # keyed by the builder's id fields
        return
    graph = fold([_Stored(raw, "repo")])
    assert graph.nodes, f"{spec.event_type} asserted no node"
    kind = spec.event_type.split(".")[0]
    if kind == "attempt":
        assert graph.node(ATTEMPT, "att-1") is not None
    if kind == "task":
        wanted = {(TARGET, "repo")} | ({(TASK, "task-0")} if "depends_on" in spec.fields else set())
        assert {(e.dst_type, e.dst) for e in graph.edges} == wanted
    if kind in ("pr", "artifact"):
        assert {e.type for e in graph.edges} == {"PRODUCED"}
