"""Event builders: one per event type the control plane's graph and topology index read.

Pipeline position: what a worker puts in a bundle. Each builder names the payload fields the
graph uses as arguments; anything else a worker wants to keep goes in ``extra`` (stored and
shown on the node, not interpreted). Unknown event types are stored too but change no graph:
:func:`event` builds those. :data:`SPECS` (in :mod:`leviathan_client.vocabulary`) describes
every type, and ``docs/events.md`` is generated from it.

Ids and idempotency: the control plane keys events by ``event_id`` and content. A random
``event_id`` (the default) is fine for an event built once and re-posted as built (the
client's retries post the same bytes). A worker that may *rebuild* an event after a crash
passes ``key=`` (any string naming the fact, e.g. ``f"{attempt_id}/started"``): the id is
then derived from the event type and the key, so the rebuilt event has the same id. Give it
the same ``timestamp`` as well to make it an exact duplicate (dropped); with a new timestamp
it is stored as the event's next revision.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict, Unpack

Id = str | int
"""A node id: a string of at most 255 characters, or a signed 64-bit integer."""

ID_NAMESPACE = uuid.UUID("6b1d4c8e-3f5a-5e2b-9c7d-0a4f1e8b2d63")


class Meta(TypedDict, total=False):
    """The envelope of every event: all optional."""

    event_id: str
    key: str
    timestamp: datetime | str
    actor_id: str


def stable_id(event_type: str, key: str) -> str:
    """The event id a builder derives from ``key`` (a UUID 5, the same in every process)."""
    return str(uuid.uuid5(ID_NAMESPACE, f"{event_type}\n{key}"))


def _timestamp(value: datetime | str | None) -> str:
    if isinstance(value, str):
        return value
    when = value or datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Event:
    """One event of a bundle."""

    event_id: str
    event_type: str
    timestamp: str
    payload: dict[str, Any]
    actor_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "timestamp": self.timestamp,
            "payload": self.payload,
        }
        if self.actor_id is not None:
            out["actor_id"] = self.actor_id
        return out


@dataclass(frozen=True)
class Bundle:
    """A bundle: what one ``POST /v1/events/ingest`` carries."""

    target: str
    bundle_id: str
    events: Sequence[Event | Mapping[str, Any]]
    artifacts: Sequence[Mapping[str, Any]] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "target": self.target,
            "bundle_id": self.bundle_id,
            "events": [e.to_dict() if isinstance(e, Event) else dict(e) for e in self.events],
        }
        if self.artifacts is not None:
            out["artifacts"] = [dict(a) for a in self.artifacts]
        return out


def bundle(
    target: str,
    events: Sequence[Event | Mapping[str, Any]],
    *,
    bundle_id: str | None = None,
    artifacts: Sequence[Mapping[str, Any]] | None = None,
) -> Bundle:
    """A bundle of ``events`` for ``target`` (a random ``bundle_id`` unless given)."""
    return Bundle(target, bundle_id or f"bundle-{uuid.uuid4()}", list(events), artifacts)


def event(
    event_type: str,
    payload: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    """Any event, of a type of your own too (stored, listed, not projected)."""
    key = meta.get("key")
    event_id = meta.get("event_id") or (
        stable_id(event_type, key) if key is not None else str(uuid.uuid4())
    )
    return Event(
        event_id=event_id,
        event_type=event_type,
        timestamp=_timestamp(meta.get("timestamp")),
        payload=dict(payload or {}),
        actor_id=meta.get("actor_id"),
    )


def _build(
    event_type: str, fields: Mapping[str, Any], extra: Mapping[str, Any] | None, meta: Meta
) -> Event:
    payload = dict(extra or {})
    payload.update({k: v for k, v in fields.items() if v is not None})
    return event(event_type, payload, **meta)


# -- targets -----------------------------------------------------------------------------


def target_registered(
    target_id: Id,
    *,
    name: str | None = None,
    repo_url: str | None = None,
    default_branch: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "target_id": target_id,
        "name": name,
        "repo_url": repo_url,
        "default_branch": default_branch,
    }
    return _build("target.registered", fields, extra, meta)


def target_updated(
    target_id: Id,
    *,
    name: str | None = None,
    repo_url: str | None = None,
    default_branch: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "target_id": target_id,
        "name": name,
        "repo_url": repo_url,
        "default_branch": default_branch,
    }
    return _build("target.updated", fields, extra, meta)


# -- tasks -------------------------------------------------------------------------------


def task_created(
    task_id: Id,
    *,
    target_id: Id | None = None,
    title: str | None = None,
    status: str | None = None,
    depends_on: Sequence[Id] | None = None,
    priority: str | int | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "task_id": task_id,
        "target_id": target_id,
        "title": title,
        "status": status,
        "depends_on": None if depends_on is None else list(depends_on),
        "priority": priority,
    }
    return _build("task.created", fields, extra, meta)


def task_updated(
    task_id: Id,
    *,
    target_id: Id | None = None,
    status: str | None = None,
    depends_on: Sequence[Id] | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "task_id": task_id,
        "target_id": target_id,
        "status": status,
        "depends_on": None if depends_on is None else list(depends_on),
    }
    return _build("task.updated", fields, extra, meta)


def task_completed(
    task_id: Id,
    *,
    target_id: Id | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    return _build("task.completed", {"task_id": task_id, "target_id": target_id}, extra, meta)


def task_blocked(
    task_id: Id,
    *,
    target_id: Id | None = None,
    reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {"task_id": task_id, "target_id": target_id, "reason": reason}
    return _build("task.blocked", fields, extra, meta)


def task_failed(
    task_id: Id,
    *,
    target_id: Id | None = None,
    reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {"task_id": task_id, "target_id": target_id, "reason": reason}
    return _build("task.failed", fields, extra, meta)


# -- attempts ----------------------------------------------------------------------------


def attempt_created(
    attempt_id: Id,
    *,
    task_id: Id | None = None,
    target_id: Id | None = None,
    attempt_number: int | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "attempt_id": attempt_id,
        "task_id": task_id,
        "target_id": target_id,
        "attempt_number": attempt_number,
    }
    return _build("attempt.created", fields, extra, meta)


def attempt_started(
    attempt_id: Id,
    *,
    task_id: Id | None = None,
    target_id: Id | None = None,
    attempt_number: int | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "attempt_id": attempt_id,
        "task_id": task_id,
        "target_id": target_id,
        "attempt_number": attempt_number,
    }
    return _build("attempt.started", fields, extra, meta)


def attempt_succeeded(
    attempt_id: Id,
    *,
    task_id: Id | None = None,
    target_id: Id | None = None,
    commit_sha: str | None = None,
    branch_name: str | None = None,
    pr_url: str | None = None,
    pr_number: int | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "attempt_id": attempt_id,
        "task_id": task_id,
        "target_id": target_id,
        "commit_sha": commit_sha,
        "branch_name": branch_name,
        "pr_url": pr_url,
        "pr_number": pr_number,
    }
    return _build("attempt.succeeded", fields, extra, meta)


def attempt_failed(
    attempt_id: Id,
    *,
    task_id: Id | None = None,
    target_id: Id | None = None,
    error_summary: str | None = None,
    failure_type: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "attempt_id": attempt_id,
        "task_id": task_id,
        "target_id": target_id,
        "error_summary": error_summary,
        "failure_type": failure_type,
    }
    return _build("attempt.failed", fields, extra, meta)


def attempt_invalidated(
    attempt_id: Id,
    *,
    reason: str,
    task_id: Id | None = None,
    target_id: Id | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "attempt_id": attempt_id,
        "reason": reason,
        "task_id": task_id,
        "target_id": target_id,
    }
    return _build("attempt.invalidated", fields, extra, meta)


# -- artifacts and pull requests ---------------------------------------------------------


def artifact_created(
    *,
    artifact_id: Id | None = None,
    sha256: str | None = None,
    attempt_id: Id | None = None,
    target_id: Id | None = None,
    artifact_type: str | None = None,
    storage_path: str | None = None,
    size_bytes: int | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "artifact_id": artifact_id,
        "sha256": sha256,
        "attempt_id": attempt_id,
        "target_id": target_id,
        "artifact_type": artifact_type,
        "storage_path": storage_path,
        "size_bytes": size_bytes,
    }
    return _build("artifact.created", fields, extra, meta)


def _pr(
    event_type: str,
    pr_url: str | None,
    pr_number: int | None,
    attempt_id: Id | None,
    target_id: Id | None,
    title: str | None,
    extra: Mapping[str, Any] | None,
    meta: Meta,
) -> Event:
    fields = {
        "pr_url": pr_url,
        "pr_number": pr_number,
        "attempt_id": attempt_id,
        "target_id": target_id,
        "title": title,
    }
    return _build(event_type, fields, extra, meta)


def pr_created(
    *,
    pr_url: str | None = None,
    pr_number: int | None = None,
    attempt_id: Id | None = None,
    target_id: Id | None = None,
    title: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    return _pr("pr.created", pr_url, pr_number, attempt_id, target_id, title, extra, meta)


def pr_merged(
    *,
    pr_url: str | None = None,
    pr_number: int | None = None,
    attempt_id: Id | None = None,
    target_id: Id | None = None,
    title: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    return _pr("pr.merged", pr_url, pr_number, attempt_id, target_id, title, extra, meta)


def pr_closed(
    *,
    pr_url: str | None = None,
    pr_number: int | None = None,
    attempt_id: Id | None = None,
    target_id: Id | None = None,
    title: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    return _pr("pr.closed", pr_url, pr_number, attempt_id, target_id, title, extra, meta)


# -- topology ----------------------------------------------------------------------------


def topo_indexed(
    target_id: Id,
    *,
    commit_sha: str | None = None,
    rules_version: str | None = None,
    areas_count: int | None = None,
    subsystems_count: int | None = None,
    dependencies_count: int | None = None,
    flows_count: int | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "target_id": target_id,
        "commit_sha": commit_sha,
        "rules_version": rules_version,
        "areas_count": areas_count,
        "subsystems_count": subsystems_count,
        "dependencies_count": dependencies_count,
        "flows_count": flows_count,
    }
    return _build("topo.indexed", fields, extra, meta)


def topo_area_discovered(
    area_id: str,
    *,
    target_id: Id | None = None,
    path_prefixes: Sequence[str] | None = None,
    file_count: int | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "area_id": area_id,
        "target_id": target_id,
        "path_prefixes": None if path_prefixes is None else list(path_prefixes),
        "file_count": file_count,
    }
    return _build("topo.area.discovered", fields, extra, meta)


def topo_subsystem_discovered(
    subsystem_id: str,
    *,
    target_id: Id | None = None,
    area_id: str | None = None,
    root_path: str | None = None,
    file_count: int | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "subsystem_id": subsystem_id,
        "target_id": target_id,
        "area_id": area_id,
        "root_path": root_path,
        "file_count": file_count,
    }
    return _build("topo.subsystem.discovered", fields, extra, meta)


def topo_dependency_discovered(
    from_subsystem_id: str,
    to_subsystem_id: str,
    *,
    target_id: Id | None = None,
    evidence: Sequence[Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
    **meta: Unpack[Meta],
) -> Event:
    fields = {
        "from_subsystem_id": from_subsystem_id,
        "to_subsystem_id": to_subsystem_id,
        "target_id": target_id,
        "evidence": None if evidence is None else [dict(e) for e in evidence],
    }
    return _build("topo.dependency.discovered", fields, extra, meta)
