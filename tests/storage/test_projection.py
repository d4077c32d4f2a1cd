"""The graph projection is a pure, order-independent fold (DESIGN §4)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.projection import (
    ATTEMPT,
    DEPENDS_ON,
    PRODUCED,
    PULL_REQUEST,
    TARGET,
    TASK,
    Edge,
    Graph,
    fold,
    merge,
    pr_node_id,
    project,
    version_text,
)
from storage.schema import format_timestamp, parse_timestamp
from tests import factories as f


@dataclass(frozen=True)
class Ev:
    event_id: str
    event_type: str
    timestamp: str
    payload: dict[str, Any]
    target: str = "tgt"


def from_body(raw: dict[str, Any]) -> list[Ev]:
    return [
        Ev(e["event_id"], e["event_type"], e["timestamp"], e["payload"], raw["target"])
        for e in raw["events"]
    ]


TYPES = [
    "attempt.created",
    "attempt.started",
    "attempt.succeeded",
    "attempt.failed",
    "attempt.invalidated",
    "task.created",
    "task.updated",
    "task.completed",
    "pr.created",
    "pr.merged",
    "artifact.created",
    "target.registered",
    "file.discovered",
]

event_st = st.builds(
    lambda n, kind, sec, att, task, extra: Ev(
        f"e{n:04d}",
        kind,
        f.ts(sec),
        {
            "attempt_id": f"a{att}",
            "task_id": f"t{task}",
            "note": extra,
            "depends_on": [f"t{(task + 1) % 3}"],
            "pr_number": att,
        },
    ),
    st.integers(0, 9999),
    st.sampled_from(TYPES),
    st.integers(0, 5),  # few timestamps: ties are broken by event_id
    st.integers(0, 2),
    st.integers(0, 2),
    st.text(max_size=3),
)
events_st = st.lists(event_st, max_size=25, unique_by=lambda e: e.event_id)


def by_time(events: list[Ev]) -> list[Ev]:
    return sorted(events, key=lambda e: (e.timestamp, e.event_id))


@settings(max_examples=150, deadline=None)
@given(events_st, st.data())
def test_any_permutation_with_duplicates_equals_timestamp_order(
    events: list[Ev], data: st.DataObject
) -> None:
    dups = data.draw(st.lists(st.sampled_from(events), max_size=5)) if events else []
    shuffled = data.draw(st.permutations(events + dups))
    assert fold(shuffled) == fold(by_time(events))


@settings(max_examples=100, deadline=None)
@given(events_st)
def test_project_is_idempotent(events: list[Ev]) -> None:
    once = project(Graph(), events)
    assert project(once, events) == once


@settings(max_examples=100, deadline=None)
@given(events_st, events_st, events_st)
def test_merge_commutative_associative(a: list[Ev], b: list[Ev], c: list[Ev]) -> None:
    ga, gb, gc = fold(a), fold(b), fold(c)
    assert merge(ga, gb) == merge(gb, ga)
    assert merge(merge(ga, gb), gc) == merge(ga, merge(gb, gc))
    assert merge(ga, ga) == ga


@settings(max_examples=100, deadline=None)
@given(events_st)
def test_split_batches_equal_one_fold(events: list[Ev]) -> None:
    half = len(events) // 2
    assert merge(fold(events[:half]), fold(events[half:])) == fold(events)


def test_succeeded_before_created_is_kept() -> None:
    created = Ev("e1", "attempt.created", f.ts(0), {"attempt_id": "a", "task_id": "t"})
    done = Ev("e2", "attempt.succeeded", f.ts(10), {"attempt_id": "a"})
    graph = fold([done, created])
    node = graph.node(ATTEMPT, "a")
    assert node is not None
    assert node["status"] == "succeeded"
    assert node["task_id"] == "t"


def test_invalidated_is_sticky() -> None:
    inval = Ev("e1", "attempt.invalidated", f.ts(0), {"attempt_id": "a", "reason": "bad"})
    later = Ev("e2", "attempt.succeeded", f.ts(60), {"attempt_id": "a"})
    for order in ([inval, later], [later, inval]):
        node = fold(order).node(ATTEMPT, "a")
        assert node is not None
        assert node["status"] == "invalidated"
        assert node["invalidated_reason"] == "bad"


def test_pr_node_id_rules() -> None:
    assert pr_node_id({"pr_number": 7, "pr_url": "u"}, "evt-123456789012345") == "pr-7"
    url = "https://github.com/x/y/pull/1"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    assert pr_node_id({"pr_url": url}, "e") == f"pr-{digest}"
    assert pr_node_id({}, "evt-123456789012345") == "pr-evt-12345678"
    graph = fold([Ev("e1", "pr.created", f.ts(0), {"attempt_id": "a", "pr_number": 9})])
    assert graph.node(PULL_REQUEST, "pr-9") is not None
    assert Edge(PRODUCED, ATTEMPT, "a", PULL_REQUEST, "pr-9") in graph.edges
    assert (graph.node(ATTEMPT, "a") or {}).get("pr_number") == 9


def test_depends_on_edges_from_factory_bundle() -> None:
    graph = fold(from_body(f.tasks_with_dependencies("demo")))
    assert Edge(DEPENDS_ON, TASK, "task-tests-2", TASK, "task-docs-1") in graph.edges
    assert Edge(DEPENDS_ON, TASK, "task-backlog-3", TASK, "task-tests-2") in graph.edges
    assert Edge(DEPENDS_ON, TASK, "task-docs-1", TARGET, "demo") in graph.edges
    assert (graph.node(TASK, "task-docs-1") or {})["status"] == "completed"
    assert (graph.node(TASK, "task-tests-2") or {})["status"] == "pending"
    assert graph.node(TARGET, "demo") is not None


def test_attempt_lifecycle_example() -> None:
    graph = fold(from_body(f.attempt_lifecycle("att-1", "task-1")))
    nodes, edges = graph.counts()
    assert nodes == {"Attempt": 1, "Artifact": 1, "PullRequest": 1}
    assert edges == {"DEPENDS_ON": 1, "PRODUCED": 2}
    attempt = graph.node(ATTEMPT, "att-1") or {}
    assert (attempt["status"], attempt["pr_number"]) == ("succeeded", 42)


def test_unknown_event_types_are_not_projected() -> None:
    graph = fold(from_body(f.bootstrap_burst(10)))
    assert graph == Graph()
    no_id = Ev("e1", "attempt.created", f.ts(0), {"task_id": "t"})
    assert fold([no_id]) == Graph()


@settings(max_examples=500, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)
    )
)
def test_version_text_fast_path_equals_parse_and_strftime(moment: datetime) -> None:
    """The fold reads normalised timestamp strings without parsing them; the shortcut must
    give the same version text as parsing and formatting (which orders the LWW registers)."""
    text = format_timestamp(moment)
    slow = parse_timestamp(text).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert version_text(text) == slow
    assert version_text(parse_timestamp(text)) == slow
