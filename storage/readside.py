"""Pure helpers both backends use to build read-side views from graph node properties.

Pipeline position: between a backend's raw rows (node property maps, event rows) and the
:mod:`storage.views` models the query API returns, so the two backends cannot drift in
how an attempt or task is presented. Also the opaque cursor codec of paginated listings.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from storage.base import StoredEvent
from storage.chain import ChainReport
from storage.projection import ARTIFACT, ATTEMPT, FIRST_SEEN, LAST_SEEN, version_text
from storage.views import (
    AttemptSummary,
    ChainStatus,
    FailureView,
    NodeView,
    Page,
    RecentEvent,
    TaskSummary,
    failure_error,
)

# Both backends list failures with this filter, newest first (``ORDER BY gid DESC``).
FAILURE_TYPES_SQL = "event_type IN ('attempt.failed', 'task.failed')"


class InvalidCursor(ValueError):
    """A cursor that this service did not issue (the API answers 422 naming the parameter)."""


def encode_cursor(position: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(position))).decode().rstrip("=")


def _load(cursor: str) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidCursor("cursor is not one this service issued") from None


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    value = _load(cursor)
    if not isinstance(value, list) or len(value) != arity:
        raise InvalidCursor("cursor is not one this service issued")
    return value


def decode_key_cursor(cursor: str) -> int:
    """The insertion number a listing's cursor resumes below (attempts, tasks, failures)."""
    value = _load(cursor)
    if isinstance(value, list) and len(value) == 2:  # attempts by (last_seen, id): moved
        raise InvalidCursor(
            "cursor comes from an earlier version that paged by activity; "
            "start again without a cursor"
        )
    if not isinstance(value, list) or len(value) != 1 or not _is_position(value[0]):
        raise InvalidCursor("cursor is not one this service issued")
    return int(value[0])


def decode_event_cursor(cursor: str) -> int | dict[int, int]:
    """An ``/v1/events`` cursor: a per-partition position vector ``{partition: seq}``
    (every event of a partition up to that seq was returned), or the bare insertion
    number of cursors issued before positions existed (each backend says how it
    resumes from one)."""
    value = _load(cursor)
    if isinstance(value, list) and len(value) == 1 and _is_position(value[0]):
        return int(value[0])
    positions = value.get("seq") if isinstance(value, dict) and len(value) == 1 else None
    if not isinstance(positions, dict) or not all(
        isinstance(p, str) and p.isdigit() and len(p) <= 9 and _is_position(s)
        for p, s in positions.items()
    ):
        raise InvalidCursor("cursor is not one this service issued")
    return {int(p): int(s) for p, s in positions.items()}


def encode_event_cursor(positions: Mapping[int, int]) -> str:
    """The opaque form of a position vector (see :func:`decode_event_cursor`)."""
    body = {"seq": {str(p): s for p, s in sorted(positions.items())}}
    return base64.urlsafe_b64encode(orjson.dumps(body)).decode().rstrip("=")


def advance(positions: Mapping[int, int], rows: Sequence[tuple[int, int]]) -> dict[int, int]:
    """``positions`` moved past the ``(partition, seq)`` of each returned event."""
    out = dict(positions)
    for partition, seq in rows:
        if seq > out.get(partition, 0):
            out[partition] = seq
    return out


def _is_position(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


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
        error=failure_error(dict(props)) if props.get("status") == "failed" else None,
    )


def newest_first(attempts: Iterable[AttemptSummary]) -> list[AttemptSummary]:
    """A task's attempts as both backends list them: latest activity first, then by id."""
    return sorted(attempts, key=lambda s: (s.timestamp or "", s.attempt_id), reverse=True)


def latest_status(attempts: Sequence[Sequence[Any]]) -> str | None:
    """The status of the first attempt :func:`newest_first` would list, from
    ``(attempt_id, status, last_seen)`` raw node properties: a task list needs no more of
    its attempts than this."""
    if not attempts:
        return None
    newest = max(attempts, key=lambda a: (display_time(a[2]) or "", a[0]))
    return _opt_str(newest[1])


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
    """A node as the original shows it: ``node_id``/``node_type`` also among the
    properties, ``created_at`` the payload's own or the first event's time."""
    created = _first_str(props.get("created_at")) or display_time(props.get(FIRST_SEEN))
    values = {**props, "node_id": node_id, "node_type": node_type, "created_at": created}
    return NodeView(
        node_id=node_id,
        node_type=node_type,
        created_at=created,
        updated_at=display_time(props.get(LAST_SEEN)),
        properties=values,
    )


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


def _first_str(*values: Any) -> str | None:
    return next((v for v in values if isinstance(v, str) and v), None)


def _first_int(*values: Any) -> int | None:
    return next((v for v in values if isinstance(v, int) and not isinstance(v, bool)), None)


def _creator(events: Sequence[StoredEvent]) -> str | None:
    """The actor of the earliest attempt event that names one (order-independent)."""
    own = [e for e in events if e.event_type.startswith("attempt.") and e.actor_id]
    if not own:
        return None
    return min(own, key=lambda e: (version_text(e.timestamp), e.event_id)).actor_id


# The attempt node's properties in the original always carry these (None when unknown).
ATTEMPT_FIELDS = ("attempt_id", "task_id", "attempt_number", "status", "started_at",
                  "completed_at", "exit_code", "failure_reason")  # fmt: skip


def attempt_node(
    attempt_id: str, props: Mapping[str, Any], events: Sequence[StoredEvent]
) -> NodeView:
    """``attempt_node`` in the original's shape, from the projected node and its events."""
    values = dict(props)
    for name in ATTEMPT_FIELDS:
        values.setdefault(name, None)
    if values["failure_reason"] is None and values["status"] == "failed":
        values["failure_reason"] = _first_str(values.get("error_summary"), values.get("error"))
    values["created_by"] = _first_str(values.get("created_by")) or _creator(events)
    return node_view(ATTEMPT, attempt_id, values)


def artifact_nodes(
    nodes: Sequence[tuple[str, Mapping[str, Any]]], bundle_rows: Sequence[Mapping[str, Any]]
) -> list[NodeView]:
    """Each artifact of an attempt once: its graph nodes (``artifact.created``), each
    completed by the bundle artifact of the same sha256, then the bundle artifacts that
    no event described, as nodes of their own. Properties always hold ``sha256``,
    ``kind``, ``uri`` and ``size`` (the event's ``artifact_type``/``storage_path``/
    ``size_bytes`` when it used the original's names)."""
    by_sha: dict[Any, Mapping[str, Any]] = {}
    for row in bundle_rows:
        by_sha.setdefault(row.get("sha256"), row)
    out = []
    for node_id, props in nodes:
        bundle = by_sha.pop(props.get("sha256"), None) or by_sha.pop(node_id, None) or {}
        values = dict(props)
        values["sha256"] = _first_str(props.get("sha256"), bundle.get("sha256"))
        values["kind"] = _first_str(props.get("kind"), props.get("artifact_type"),
                                    bundle.get("kind"))  # fmt: skip
        values["uri"] = _first_str(props.get("uri"), bundle.get("uri"), props.get("storage_path"))
        values["size"] = _first_int(props.get("size"), props.get("size_bytes"), bundle.get("size"))
        out.append(node_view(ARTIFACT, node_id, values))
    for row in by_sha.values():
        node_id = str(row.get("artifact_id") or row.get("sha256"))
        values = {k: row.get(k) for k in ("artifact_id", "sha256", "kind", "uri", "size",
                                          "bundle_id", "attempt_id")}  # fmt: skip
        out.append(node_view(ARTIFACT, node_id, values))
    return out


def topology_page(rows: Sequence[tuple[str, Any]], limit: int) -> Page[dict[str, Any]]:
    """A page of ``(item, payload)`` rows fetched with ``limit + 1`` (both backends)."""
    items = [dict(payload) for _, payload in rows[:limit]]
    next_cursor = encode_cursor([rows[limit - 1][0]]) if len(rows) > limit else None
    return Page[dict[str, Any]](items=items, next_cursor=next_cursor)


def failure_view(ev: StoredEvent, attempt: Mapping[str, Any] | None) -> FailureView:
    """One ``GET /v1/failures`` item: the failure event, its gaps filled from its attempt node.

    ``attempt`` is the attempt node's properties (None when the event names no attempt or
    the node is unknown); the task and target fall back to them when the event omits them.
    """
    task_id = ev.task_id or (attempt or {}).get("task_id")
    target_id = ev.payload.get("target_id") or (attempt or {}).get("target") or ev.target
    return FailureView(
        attempt_id=ev.attempt_id,
        task_id=None if task_id is None else str(task_id),
        target=str(target_id),
        error=failure_error(ev.payload),
        timestamp=ev.timestamp,
        event_type=ev.event_type,
        event_id=ev.event_id,
    )
