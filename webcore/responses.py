"""Request and response models of the HTTP API both tiers serve (shapes in README.md).

Pipeline position: the read handlers (``query``) and the operator write endpoints
(``ingest``) serialise these, and :mod:`query.openapi` generates the document from them, so
each wire shape is declared once. Item models come from :mod:`storage.views`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from storage.schema import MAX_ID_LENGTH
from storage.views import AttemptSummary, EventView, FailureView, TaskSummary


class AttemptList(BaseModel):
    attempts: list[AttemptSummary]
    count: int
    next_cursor: str | None


class AttemptWithError(AttemptSummary):
    """An attempt with its failure summary (``GET /v1/attempts?include=error``)."""

    error: str | None = None


class AttemptErrorList(BaseModel):
    attempts: list[AttemptWithError]
    count: int
    next_cursor: str | None


class FailureList(BaseModel):
    failures: list[FailureView]
    count: int
    next_cursor: str | None = None


class EventPage(BaseModel):
    events: list[EventView]
    next_cursor: str | None


class TaskList(BaseModel):
    tasks: list[TaskSummary]
    count: int
    next_cursor: str | None = None


class ConsumerStats(BaseModel):
    name: str
    pending: int
    idle_ms: int


class PartitionStats(BaseModel):
    partition: int
    stream: str
    length: int
    lag: int | None
    pending: int
    consumers: list[ConsumerStats]


class Stats(BaseModel):
    partitions: list[PartitionStats]
    total_length: int
    total_lag: int
    total_pending: int
    dead_letters: int


class Accepted(BaseModel):
    status: Literal["accepted"]
    bundle_id: str
    ingested: int


class InvalidateAccepted(Accepted):
    attempt_id: str
    event_id: str


class IngestOk(BaseModel):
    """``?wait=`` answer once the consumers finished every entry of the bundle."""

    status: Literal["ok", "partial"]  # partial: some events went to a dead stream
    bundle_id: str
    ingested: int
    stored: int
    revisions: int
    duplicates: int
    dead_lettered: int


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str


class ErrorBody(BaseModel):
    detail: str
    errors: list[ErrorItem | dict[str, Any]]


class Health(BaseModel):
    status: str


class BacklogSuggestRequest(BaseModel):
    """Body of ``POST /v1/backlog/suggest``; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    target: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, strip_whitespace=True)
    ]


class BacklogSuggestResponse(BaseModel):
    """The original's response; ``event_id``/``bundle_id`` say what was queued."""

    status: Literal["accepted"]
    attempt_id: str | None = None
    pr_url: str | None = None
    tasks_proposed: int | None = None
    message: str
    event_id: str
    bundle_id: str
