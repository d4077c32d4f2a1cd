"""The graph projection is a pure, order-independent fold over every stored revision."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.chain import content_digest
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

    @property
    def digest(self) -> str:
        """Content digest, as storage computes it (the event_id is not part of it)."""
        return content_digest(
            event_type=self.event_type, timestamp=self.timestamp, actor_id=None,
            payload=self.payload,
        )  # fmt: skip


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

# few event_ids: the same id drawn again with other content is a revision of it
event_st = st.builds(
    lambda n, kind, sec, att, task, extra: Ev(
        f"e{n:02d}",
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
    st.integers(0, 30),
    st.sampled_from(TYPES),
    st.integers(0, 5),  # few timestamps: ties are broken by event_id, then by digest
    st.integers(0, 2),
    st.integers(0, 2),
    st.text(max_size=3),
)
# a set of stored events: each (event_id, content) once, several revisions per id
events_st = st.lists(event_st, max_size=25, unique_by=lambda e: (e.event_id, e.digest))


def by_time(events: list[Ev]) -> list[Ev]:
    return sorted(events, key=lambda e: (e.timestamp, e.event_id, e.digest))


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


def test_revisions_with_one_timestamp_fold_alike_in_either_order() -> None:
    """Two revisions of one event_id at the same instant: the content digest decides which
    one's values win, not which arrived (was stored) first."""
    first = Ev("boot", "target.updated", f.ts(0), {"target_id": "demo", "commit_sha": "3f1c2a9"})
    again = Ev("boot", "target.updated", f.ts(0), {"target_id": "demo", "commit_sha": "8b77d01"})
    assert first.digest != again.digest
    winner = max(first, again, key=lambda e: e.digest)
    for order in ([first, again], [again, first]):
        node = fold(order).node(TARGET, "demo")
        assert node is not None
        assert node["commit_sha"] == winner.payload["commit_sha"]


def test_later_revision_wins_by_timestamp() -> None:
    first = Ev("boot", "target.updated", f.ts(0), {"target_id": "demo", "commit_sha": "old"})
    again = Ev("boot", "target.updated", f.ts(60), {"target_id": "demo", "commit_sha": "new"})
    for order in ([first, again], [again, first]):
        node = fold(order).node(TARGET, "demo")
        assert node is not None
        assert (node["commit_sha"], node["first_seen"]) == ("new", version_text(f.ts(0)))


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
def test_version_text_fast_path_equals_parse_and_format(moment: datetime) -> None:
    """The fold reads normalised timestamp strings without parsing them; the shortcut must
    give the same version text as parsing and formatting (which orders the LWW registers),
    a four-digit year included."""
    text = format_timestamp(moment)
    slow = parse_timestamp(text).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    assert version_text(text) == slow
    assert version_text(parse_timestamp(text)) == slow


@settings(max_examples=300, deadline=None)
@given(
    a=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
    b=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
)
def test_version_text_sorts_like_the_instants(a: datetime, b: datetime) -> None:
    """Versions are compared as text: years 1-999 must sort before 1000 (strftime's
    unpadded years did not)."""
    ta, tb = version_text(format_timestamp(a)), version_text(format_timestamp(b))
    assert (ta < tb) == (a < b)
    assert (ta == tb) == (a == b)
