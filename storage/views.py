"""Read-side models: what storage returns to the query API (the original's shapes, README).

Pipeline position: both backends build these from their tables/files; ingest's query
handlers serialise them unchanged and the OpenAPI document is generated from them, so the
wire shapes are defined once. Field names follow the original control plane's responses.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, computed_field

# JSON objects a store decoded from its own rows: taken as they are, not validated into a
# copy (for a page of events with nested payloads that copy was half the cost of the page).
# The document and the answers are the same as for a plain ``dict[str, Any]``.
StoredObject = Annotated[dict[str, Any], SkipValidation]


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class EventView(_View):
    """A stored event as the API shows it (the log row, hash chain included)."""

    event_id: str
    event_type: str
    timestamp: str
    actor_id: str | None
    payload: StoredObject
    bundle_id: str
    target: str
    received_at: str
    partition: int
    seq: int
    prev_hash: str
    hash: str
    task_id: str | None = None
    attempt_id: str | None = None
    revision: int = 1
    """1 for the first content stored under ``event_id``, 2, 3, … for each later one."""


class RecentEvent(_View):
    """One entry of ``recent_events`` in the graph summary (original shape)."""

    event_id: str
    timestamp: str
    event_type: str
    actor_id: str | None
    target: str
    attempt_id: str | None


class GraphSummary(_View):
    """The original's three keys plus the totals its CLI prints."""

    nodes_by_type: dict[str, int]
    edges_by_type: dict[str, int]
    recent_events: list[RecentEvent]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_nodes(self) -> int:
        return sum(self.nodes_by_type.values())

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_edges(self) -> int:
        return sum(self.edges_by_type.values())


class AttemptSummary(_View):
    attempt_id: str
    task_id: str | None
    target: str | None
    status: str | None
    timestamp: str | None
    pr_url: str | None
    pr_number: int | None
    # the failure summary of a failed attempt (``error_summary``, else ``error``, else
    # ``reason``, as /v1/failures shows it); served only with ``?include=error``
    # (webcore.responses.AttemptWithError), so the original clients' shape stays as it was
    error: str | None = Field(default=None, exclude=True)


class NodeView(_View):
    """A graph node as the original returns one: id, type, times and property values.

    ``created_at``/``updated_at`` are the earliest and latest event times that asserted
    the node (or the payload's own ``created_at``); ``None`` where no event did (an
    artifact known only from a bundle's ``artifacts`` list).
    """

    node_id: str
    node_type: str
    created_at: str | None = None
    updated_at: str | None = None
    properties: StoredObject


class AttemptDetail(_View):
    """``artifacts``: each Artifact node the attempt PRODUCED, merged with the bundle
    artifact of the same sha256; a bundle artifact without such a node becomes one."""

    attempt_node: NodeView
    events: list[EventView]
    artifacts: list[NodeView]


class FailureView(_View):
    attempt_id: str | None
    task_id: str | None
    target: str | None
    error: str | None
    timestamp: str
    event_type: str
    event_id: str


class TaskSummary(_View):
    task_id: str
    target: str | None
    status: str | None
    title: str | None
    depends_on: list[str]
    dependents: list[str]
    latest_attempt_status: str | None
    updated_at: str | None


class TaskDetail(_View):
    task: TaskSummary
    task_node: NodeView
    attempts: list[AttemptSummary]


class TopologySummary(_View):
    """The newest ``topo.indexed`` event of a target and how many items the index holds."""

    target: str
    payload: StoredObject
    timestamp: str
    event_id: str
    counts: dict[str, int]


class ChainStatus(_View):
    """Result of verifying one partition's hash chain."""

    partition: int
    checked: int
    ok: bool
    last_hash: str
    broken_at_seq: int | None = None
    broken_event_id: str | None = None
    reason: str | None = None


T = TypeVar("T")


class Page(_View, Generic[T]):
    """One page of a cursor-paginated listing; ``next_cursor`` is opaque to clients.

    ``next_cursor`` is None once the listing is exhausted. ``position`` (event listings
    only) is where the listing stands after this page, also at its end: the cursor a
    caught-up client polls from (``GET /v1/events`` answers it as ``next_cursor`` there).
    """

    items: list[T]
    next_cursor: str | None
    position: str | None = None


def failure_error(payload: dict[str, Any]) -> str | None:
    """The original's rule: ``error_summary``, else ``error``, else ``reason``."""
    for key in ("error_summary", "error", "reason"):
        value = payload.get(key)
        if value is not None and value != "":
            return value if isinstance(value, str) else str(value)
    return None
