"""Tests for webcore.fastjson: orjson's bodies are pydantic's, byte for byte."""

from __future__ import annotations

from typing import Annotated, Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, PlainSerializer, TypeAdapter, field_serializer

from storage.views import (
    AttemptDetail,
    AttemptSummary,
    EventView,
    FailureView,
    GraphSummary,
    NodeView,
    Page,
    TaskDetail,
    TaskSummary,
)
from webcore.fastjson import dumps, dumps_list, plain
from webcore.responses import (
    AttemptErrorList,
    AttemptList,
    AttemptWithError,
    EventPage,
    FailureList,
    TaskList,
)

# what a store decodes from stored JSON: orjson's types, 64-bit integers, finite floats
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)
payloads = st.dictionaries(st.text(), json_values, max_size=6)
texts = st.text()
maybe = st.none() | st.text()


@st.composite
def events(draw: st.DrawFn) -> EventView:
    return EventView(
        event_id=draw(texts), event_type=draw(texts), timestamp=draw(texts),
        actor_id=draw(maybe), payload=draw(payloads), bundle_id=draw(texts),
        target=draw(texts), received_at=draw(texts), partition=draw(st.integers(0, 64)),
        seq=draw(st.integers(0, 2**62)), prev_hash=draw(texts), hash=draw(texts),
        task_id=draw(maybe), attempt_id=draw(maybe), revision=draw(st.integers(1, 9)),
    )  # fmt: skip


def test_the_read_bodies_are_classified() -> None:
    fast = [EventView, FailureView, TaskSummary, NodeView, AttemptDetail, Page[EventView]]
    fast += [EventPage, FailureList, TaskList, AttemptErrorList]
    fast += [AttemptSummary, AttemptList, TaskDetail]  # with a field that is never written
    assert all(plain(m) for m in fast)
    assert not plain(GraphSummary)  # computed fields


def test_what_would_change_the_output_is_not_plain() -> None:
    class Aliased(BaseModel):
        x: int = Field(serialization_alias="y")

    class Serialised(BaseModel):
        x: int

        @field_serializer("x")
        def _x(self, value: int) -> str:
            return str(value)

    class Annotated_(BaseModel):
        x: Annotated[int, PlainSerializer(str)]

    class Extra(BaseModel, extra="allow"):
        x: int

    class Other(BaseModel):
        when: bytes

    for model in (Aliased, Serialised, Annotated_, Extra, Other):
        assert not plain(model), model


@settings(max_examples=150, deadline=None)
@given(st.lists(events(), max_size=5), maybe)
def test_event_pages_are_written_as_pydantic_writes_them(
    items: list[EventView], cursor: str | None
) -> None:
    page = EventPage(events=items, next_cursor=cursor)
    assert dumps(page) == page.model_dump_json().encode()
    adapter = TypeAdapter(list[EventView])
    assert dumps_list(items, adapter) == adapter.dump_json(items)


@settings(max_examples=100, deadline=None)
@given(events(), st.lists(texts, max_size=3), payloads)
def test_nested_views_are_written_as_pydantic_writes_them(
    event: EventView, ids: list[str], props: dict[str, Any]
) -> None:
    node = NodeView(node_id="a", node_type="Attempt", created_at=None, properties=props)
    detail = AttemptDetail(attempt_node=node, events=[event], artifacts=[node, node])
    assert dumps(detail) == detail.model_dump_json().encode()
    task = TaskSummary(
        task_id="t", target=None, status="pending", title=None, depends_on=ids,
        dependents=ids[::-1], latest_attempt_status=None, updated_at="2026-01-01T00:00:00Z",
    )  # fmt: skip
    listing = TaskList(tasks=[task, task], count=2)
    assert dumps(listing) == listing.model_dump_json().encode()


def test_what_orjson_refuses_goes_through_pydantic() -> None:
    # a store decoding with the standard library could hand over an integer past 64 bits
    base = {"event_type": "x", "timestamp": "t", "actor_id": None, "bundle_id": "b"}
    big = EventView(
        event_id="e", payload={"n": 2**70}, target="t", received_at="r", partition=0,
        seq=1, prev_hash="p", hash="h", **base,
    )  # fmt: skip
    page = EventPage(events=[big], next_cursor=None)
    assert dumps(page) == page.model_dump_json().encode()
    assert b"1180591620717411303424" in dumps(page)
    adapter = TypeAdapter(list[EventView])
    assert dumps_list([big], adapter) == adapter.dump_json([big])


def test_computed_fields_are_written_by_pydantic() -> None:
    body = GraphSummary(nodes_by_type={"Task": 2}, edges_by_type={}, recent_events=[])
    assert dumps(body) == body.model_dump_json().encode()
    assert b'"total_nodes":2' in dumps(body)


def _failed(attempt_id: str, target: str | None, pr: int | None) -> AttemptSummary:
    return AttemptSummary(
        attempt_id=attempt_id, task_id=None, target=target, status="failed", timestamp=None,
        pr_url=None, pr_number=pr, error="boom",
    )  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(texts, maybe, st.none() | st.integers(-(2**63), 2**63)), max_size=4))
def test_an_excluded_field_is_left_out_as_pydantic_leaves_it(
    rows: list[tuple[str, str | None, int | None]],
) -> None:
    attempts = [_failed(a, t, n) for a, t, n in rows]
    body = AttemptList(attempts=attempts, count=len(attempts), next_cursor=None)
    assert dumps(body) == body.model_dump_json().encode()
    assert b"boom" not in dumps(body)
    full = AttemptErrorList(
        attempts=[AttemptWithError(**a.__dict__) for a in attempts], count=1, next_cursor=None
    )
    assert dumps(full) == full.model_dump_json().encode()
    assert dumps(full).count(b'"error":"boom"') == len(attempts)
