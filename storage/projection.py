"""The graph projection: one pure fold from events to task/attempt graph.

Pipeline position: both storage backends call :func:`fold` on each committed batch and
:func:`merge` the result into the nodes they already hold, in the same transaction as the
events. The query API only reads what this produced.

Why it is order-independent: a graph is a join-semilattice. Every node property is a
last-writer-wins register versioned by ``(timestamp, event_id, digest)`` of the event that
set it (``first_seen`` keeps the *smallest* version instead), ``status = invalidated`` on
an attempt is sticky, and edges form a grow-only set. ``merge`` is therefore commutative,
associative and idempotent, so any permutation of a set of events, with duplicates, folds
to the same graph as timestamp order — the property tests in ``tests/storage`` check it.
The digest (the first :data:`VERSION_DIGEST_CHARS` hex characters of the content digest)
makes the order total over revisions: two revisions of one event_id may carry the same
timestamp, and which of them arrived first must not decide the graph.

Node ids follow the original control plane: the payload's ``target_id``/``task_id``/
``attempt_id``/``artifact_id``; pull requests are ``pr-{pr_number}``, else
``pr-{sha256(pr_url)[:12]}``, else ``pr-{event_id[:12]}``. Events of unknown types, or
missing the id their node needs, are stored but not projected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from storage.schema import MAX_ID_LENGTH, parse_timestamp, to_utc

TARGET, TASK, ATTEMPT, ARTIFACT, PULL_REQUEST = (
    "Target",
    "Task",
    "Attempt",
    "Artifact",
    "PullRequest",
)
NODE_TYPES = (TARGET, TASK, ATTEMPT, ARTIFACT, PULL_REQUEST)
DEPENDS_ON, PRODUCED = "DEPENDS_ON", "PRODUCED"
EDGE_TYPES = (DEPENDS_ON, PRODUCED)

ATTEMPT_STATUS = {
    "attempt.created": "created",
    "attempt.started": "running",
    "attempt.succeeded": "succeeded",
    "attempt.failed": "failed",
    "attempt.invalidated": "invalidated",
}
TASK_STATUS = {
    "task.created": None,  # payload.status, else "pending"
    "task.updated": None,  # payload.status if given, else unchanged
    "task.completed": "completed",
    "task.blocked": "blocked",
    "task.failed": "failed",
}
PR_STATUS = {"pr.created": "open", "pr.merged": "merged", "pr.closed": "closed"}
TARGET_EVENTS = frozenset({"target.registered", "target.updated"})

PROJECTED_TYPES = frozenset(
    {*ATTEMPT_STATUS, *TASK_STATUS, *PR_STATUS, "artifact.created", *TARGET_EVENTS}
)
"""Event types :func:`fold` reads; every other event is stored but not projected."""

STICKY_STATUS = "invalidated"
FIRST_SEEN = "first_seen"
LAST_SEEN = "last_seen"

Version = tuple[str, str, str]
"""``(timestamp with fixed microseconds, event_id, digest prefix)``: timestamp order, ties
broken by event_id, then by content (revisions of one id)."""

VERSION_DIGEST_CHARS = 16
"""Hex characters of the content digest kept in a version: 64 bits tell the revisions of
one event_id apart, and a node's stored versions stay small (one per property)."""

NodeKey = tuple[str, str]
"""``(node type, node id)``."""


class Edge(NamedTuple):
    """A typed edge between two nodes. A named tuple, as :class:`Prop`: the fold makes one
    per projected event, and a frozen dataclass's ``__init__`` cost ~1 µs of that."""

    type: str
    src_type: str
    src: str
    dst_type: str
    dst: str


class Prop(NamedTuple):
    """One property value with the version of the event that set it.

    A named tuple rather than a frozen dataclass: the fold makes one per property of every
    projected event, and a frozen dataclass's ``__init__`` was most of the fold's time.
    """

    value: Any
    version: Version


@dataclass(slots=True)
class Graph:
    """Nodes as property registers, edges as a set. Treat as a value: functions copy."""

    nodes: dict[NodeKey, dict[str, Prop]] = field(default_factory=dict)
    edges: set[Edge] = field(default_factory=set)

    def node(self, node_type: str, node_id: str) -> dict[str, Any] | None:
        """Plain property values of one node, or None."""
        props = self.nodes.get((node_type, node_id))
        return None if props is None else {k: p.value for k, p in props.items()}

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """``nodes_by_type`` and ``edges_by_type`` as the graph summary reports them."""
        nodes: dict[str, int] = {}
        for node_type, _ in self.nodes:
            nodes[node_type] = nodes.get(node_type, 0) + 1
        edges: dict[str, int] = {}
        for edge in self.edges:
            edges[edge.type] = edges.get(edge.type, 0) + 1
        return nodes, edges


class ProjectableEvent(Protocol):
    """What the fold reads of an event; StoredEvent and test doubles both satisfy it."""

    @property
    def event_id(self) -> str: ...
    @property
    def event_type(self) -> str: ...
    @property
    def timestamp(self) -> str | datetime: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...
    @property
    def target(self) -> str: ...
    @property
    def digest(self) -> str:
        """Content digest (:func:`storage.chain.digest_of`)."""
        ...


def _shape(ts: str) -> bool:
    return ts[4] == ts[7] == "-" and ts[10] == "T" and ts[13] == ts[16] == ":" and ts[:4].isdigit()


def version_text(ts: str | datetime) -> str:
    """The timestamp with fixed microseconds and a four-digit year (sorts as text like the
    instants do, years 1-999 included)."""
    if isinstance(ts, str):
        # Fast path for the normalised form of storage.schema.format_timestamp (every
        # stored event): parsing and formatting cost more than the rest of the fold.
        n = len(ts)
        if (n == 20 or (n == 27 and ts[19] == ".")) and ts[n - 1] == "Z" and _shape(ts):
            return ts if n == 27 else ts[:19] + ".000000Z"
        ts = parse_timestamp(ts)
    # not strftime: glibc's %Y writes year 5 as "5", which sorts after "1000"
    return to_utc(ts).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def version_of(event: ProjectableEvent) -> Version:
    return (
        version_text(event.timestamp),
        event.event_id,
        event.digest[:VERSION_DIGEST_CHARS],
    )


def pr_node_id(payload: Mapping[str, Any], event_id: str) -> str:
    number = payload.get("pr_number")
    if number is not None and number != "":
        return f"pr-{number}"
    url = payload.get("pr_url")
    if isinstance(url, str) and url:
        return f"pr-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
    return f"pr-{event_id[:12]}"


def _merge_prop(name: str, old: Prop | None, new: Prop) -> Prop:
    if old is None or old == new:
        return new
    # on equal versions the old one stays, as min()/max() keep their first argument
    if name == FIRST_SEEN:
        return new if new.version < old.version else old
    if name == "status":
        old_sticky, new_sticky = old.value == STICKY_STATUS, new.value == STICKY_STATUS
        if old_sticky != new_sticky:
            return old if old_sticky else new
    return new if new.version > old.version else old


def merge_props(old: Mapping[str, Prop] | None, new: Mapping[str, Prop]) -> dict[str, Prop]:
    """Join two property maps of the same node."""
    merged = dict(old or {})
    for name, prop in new.items():
        merged[name] = _merge_prop(name, merged.get(name), prop)
    return merged


def merge(base: Graph, delta: Graph) -> Graph:
    """Join two graphs (commutative, associative, idempotent); inputs are not modified."""
    nodes = dict(base.nodes)
    for key, props in delta.nodes.items():
        nodes[key] = merge_props(nodes.get(key), props)
    return Graph(nodes=nodes, edges=base.edges | delta.edges)


def _str_id(value: Any) -> str | None:
    # longer strings are not ids (the schema refuses them in the id fields; depends_on
    # items are only bounded here), so no node key outgrows what a btree can index
    if isinstance(value, str) and value and len(value) <= MAX_ID_LENGTH:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class _Folder:
    """Accumulates the assertions of a sequence of events into one Graph."""

    def __init__(self) -> None:
        self.graph = Graph()

    def assert_node(self, key: NodeKey, values: Mapping[str, Any], version: Version) -> None:
        props = {name: Prop(value, version) for name, value in values.items()}
        props[FIRST_SEEN] = props[LAST_SEEN] = Prop(version[0], version)  # frozen: shareable
        old = self.graph.nodes.get(key)
        # a node first asserted in this fold needs no merge (merge_props(None, p) == p)
        self.graph.nodes[key] = props if old is None else merge_props(old, props)

    def edge(self, edge_type: str, src: NodeKey, dst: NodeKey) -> None:
        self.graph.edges.add(Edge(edge_type, src[0], src[1], dst[0], dst[1]))

    def add(self, event: ProjectableEvent) -> None:
        kind = event.event_type
        if kind in ATTEMPT_STATUS:
            self._attempt(event, ATTEMPT_STATUS[kind])
        elif kind in TASK_STATUS:
            self._task(event)
        elif kind in PR_STATUS:
            self._pull_request(event, PR_STATUS[kind])
        elif kind == "artifact.created":
            self._artifact(event)
        elif kind in TARGET_EVENTS:
            self._target(event)

    def _target_id(self, event: ProjectableEvent) -> str:
        return _str_id(event.payload.get("target_id")) or event.target

    def _attempt(self, event: ProjectableEvent, status: str) -> None:
        attempt_id = _str_id(event.payload.get("attempt_id"))
        if attempt_id is None:
            return
        values = {k: v for k, v in event.payload.items() if k != "status"}
        values.update(status=status, target=self._target_id(event))
        if status == STICKY_STATUS and "reason" in event.payload:
            values["invalidated_reason"] = event.payload["reason"]
        key = (ATTEMPT, attempt_id)
        self.assert_node(key, values, version_of(event))
        task_id = _str_id(event.payload.get("task_id"))
        if task_id is not None:
            self.edge(DEPENDS_ON, key, (TASK, task_id))

    def _task(self, event: ProjectableEvent) -> None:
        payload = event.payload
        task_id = _str_id(payload.get("task_id"))
        if task_id is None:
            return
        values = {k: v for k, v in payload.items() if k != "status"}
        values["target"] = self._target_id(event)
        fixed = TASK_STATUS[event.event_type]
        if fixed is not None:
            values["status"] = fixed
        elif isinstance(payload.get("status"), str):
            values["status"] = payload["status"]
        elif event.event_type == "task.created":
            values["status"] = "pending"
        key = (TASK, task_id)
        self.assert_node(key, values, version_of(event))
        self.edge(DEPENDS_ON, key, (TARGET, values["target"]))
        depends_on = payload.get("depends_on")
        if isinstance(depends_on, list):
            for dep in depends_on:
                dep_id = _str_id(dep)
                if dep_id is not None and dep_id != task_id:
                    self.edge(DEPENDS_ON, key, (TASK, dep_id))

    def _pull_request(self, event: ProjectableEvent, status: str) -> None:
        payload = event.payload
        key = (PULL_REQUEST, pr_node_id(payload, event.event_id))
        values = {k: v for k, v in payload.items() if k not in ("status", "state")}
        values.update(status=status, target=self._target_id(event))
        version = version_of(event)
        self.assert_node(key, values, version)
        attempt_id = _str_id(payload.get("attempt_id"))
        if attempt_id is not None:
            self.edge(PRODUCED, (ATTEMPT, attempt_id), key)
            pr_fields = {k: payload[k] for k in ("pr_url", "pr_number") if k in payload}
            if pr_fields:
                # the attempts list shows the PR of an attempt; keep it on the attempt node
                self.graph.nodes[(ATTEMPT, attempt_id)] = merge_props(
                    self.graph.nodes.get((ATTEMPT, attempt_id)),
                    {k: Prop(v, version) for k, v in pr_fields.items()},
                )

    def _artifact(self, event: ProjectableEvent) -> None:
        payload = event.payload
        artifact_id = (
            _str_id(payload.get("artifact_id"))
            or _str_id(payload.get("sha256"))
            or f"artifact-{event.event_id[:12]}"
        )
        key = (ARTIFACT, artifact_id)
        self.assert_node(key, dict(payload), version_of(event))
        attempt_id = _str_id(payload.get("attempt_id"))
        if attempt_id is not None:
            self.edge(PRODUCED, (ATTEMPT, attempt_id), key)

    def _target(self, event: ProjectableEvent) -> None:
        key = (TARGET, self._target_id(event))
        self.assert_node(key, dict(event.payload), version_of(event))


def fold(events: Iterable[ProjectableEvent]) -> Graph:
    """The graph that a set of events asserts on its own (a delta to :func:`merge`)."""
    folder = _Folder()
    for event in events:
        folder.add(event)
    return folder.graph


def project(graph: Graph, events: Iterable[ProjectableEvent]) -> Graph:
    """``graph`` after ``events``: the one projection both backends use."""
    return merge(graph, fold(events))


def props_to_json(props: Mapping[str, Prop]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Split a node into plain values (what readers want) and versions (for merging)."""
    return (
        {name: p.value for name, p in props.items()},
        {name: list(p.version) for name, p in props.items()},
    )


def props_from_json(
    values: Mapping[str, Any], versions: Mapping[str, list[str]]
) -> dict[str, Prop]:
    """Inverse of :func:`props_to_json`. Versions stored before revisions existed have no
    digest: read as ``""``, which orders them before any revision with the same
    ``(timestamp, event_id)`` (``rebuild_graph`` recomputes them exactly)."""
    return {
        name: Prop(values.get(name), (v[0], v[1], v[2] if len(v) > 2 else ""))
        for name, v in versions.items()
    }
