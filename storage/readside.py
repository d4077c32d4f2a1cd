"""Pure helpers both backends use to build read-side views from graph node properties.

Pipeline position: between a backend's raw rows (node property maps, event rows) and the
:mod:`storage.views` models the query API returns, so the two backends cannot drift in
how an attempt or task is presented. Also the opaque cursor codec of paginated listings.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from storage.base import StoredEvent
from storage.chain import ChainReport
from storage.projection import LAST_SEEN
from storage.views import (
    ArtifactView,
    AttemptSummary,
    ChainStatus,
    NodeView,
    RecentEvent,
    TaskSummary,
)


class InvalidCursor(ValueError):
    """A cursor that this service did not issue (the API answers 422 naming the parameter)."""


def encode_cursor(position: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidCursor("cursor is not one this service issued") from None
    if not isinstance(value, list) or len(value) != arity:
        raise InvalidCursor("cursor is not one this service issued")
    return value


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def display_time(version_ts: Any) -> str | None:
    """``last_seen``/``first_seen`` hold fixed-microsecond strings; show the short form."""
    if not isinstance(version_ts, str):
        return None
    return version_ts.replace(".000000Z", "Z")


def attempt_summary(attempt_id: str, props: Mapping[str, Any]) -> AttemptSummary:
    return AttemptSummary(
        attempt_id=attempt_id,
        task_id=_opt_str(props.get("task_id")),
        target=_opt_str(props.get("target") or props.get("target_id")),
        status=_opt_str(props.get("status")),
        timestamp=display_time(props.get(LAST_SEEN)),
        pr_url=_opt_str(props.get("pr_url")),
        pr_number=_opt_int(props.get("pr_number")),
    )


def task_summary(
    task_id: str,
    props: Mapping[str, Any],
    *,
    depends_on: Sequence[str],
    dependents: Sequence[str],
    latest_attempt_status: str | None,
) -> TaskSummary:
    return TaskSummary(
        task_id=task_id,
        target=_opt_str(props.get("target") or props.get("target_id")),
        status=_opt_str(props.get("status")),
        title=_opt_str(props.get("title")),
        depends_on=sorted(depends_on),
        dependents=sorted(dependents),
        latest_attempt_status=latest_attempt_status,
        updated_at=display_time(props.get(LAST_SEEN)),
    )


def node_view(node_type: str, node_id: str, props: Mapping[str, Any]) -> NodeView:
    return NodeView(node_type=node_type, node_id=node_id, properties=dict(props))


def chain_status(report: ChainReport) -> ChainStatus:
    """The view of a :func:`storage.chain.first_broken_link` walk (both backends)."""
    return ChainStatus(
        partition=report.partition,
        checked=report.checked,
        ok=report.ok,
        last_hash=report.last_hash,
        broken_at_seq=report.broken_at_seq,
        broken_event_id=report.broken_event_id,
        reason=report.reason,
    )


def recent_event(ev: StoredEvent) -> RecentEvent:
    """One ``recent_events`` entry of the graph summary (both backends)."""
    return RecentEvent(
        event_id=ev.event_id,
        timestamp=ev.timestamp,
        event_type=ev.event_type,
        actor_id=ev.actor_id,
        target=ev.target,
        attempt_id=ev.attempt_id,
    )


def event_artifact(ev: StoredEvent) -> ArtifactView:
    """The artifact view of an ``artifact.created`` event (both backends)."""
    p = ev.payload
    size = p.get("size", p.get("size_bytes"))
    artifact_id = p.get("artifact_id") or p.get("sha256") or f"artifact-{ev.event_id[:12]}"
    return ArtifactView(
        artifact_id=str(artifact_id),
        sha256=p.get("sha256") if isinstance(p.get("sha256"), str) else None,
        kind=str(p.get("kind") or p.get("artifact_type") or "") or None,
        uri=str(p.get("uri") or p.get("storage_path") or "") or None,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        bundle_id=ev.bundle_id,
        attempt_id=ev.attempt_id,
    )
