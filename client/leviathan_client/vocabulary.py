"""The event vocabulary as data: every type, its builder, its fields, its effect on the graph.

Pipeline position: documentation source. ``python -m leviathan_client.vocabulary`` prints
the control plane's ``docs/events.md``; a test there checks the file matches, that every
event type its projection and topology index act on has an entry here, and that each
entry's fields are exactly its builder's payload arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from leviathan_client import events as ev

FIELDS = {
    "target_id": "the Target node (a string ≤ 255 characters or a 64-bit integer); "
    "defaults to the bundle's `target`",
    "task_id": "the Task node",
    "attempt_id": "the Attempt node",
    "artifact_id": "the Artifact node (else `sha256`, else derived from the event id)",
    "title": "shown on the node",
    "name": "shown on the node",
    "repo_url": "shown on the node",
    "default_branch": "shown on the node",
    "status": "the task's status (`task.created` defaults to `pending`; `task.updated` "
    "keeps the old one when absent)",
    "depends_on": "task ids: a DEPENDS_ON edge from this task to each (self-references "
    "and ids over 255 characters are skipped)",
    "priority": "shown on the node",
    "reason": "why; on `attempt.invalidated` kept as `invalidated_reason` and listed by "
    "`GET /v1/failures` when there is no `error_summary`",
    "attempt_number": "shown on the node",
    "commit_sha": "shown on the node",
    "branch_name": "shown on the node",
    "pr_url": "the pull request; also copied onto the attempt that produced it",
    "pr_number": "the PullRequest node is `pr-<number>` (else `pr-<sha256(pr_url)[:12]>`)",
    "error_summary": "the failure text `GET /v1/failures` shows",
    "failure_type": "shown on the node and in failures",
    "sha256": "the artifact's content hash",
    "artifact_type": "shown on the node",
    "storage_path": "where the artifact lives",
    "size_bytes": "shown on the node",
    "rules_version": "the topology rules that produced the run",
    "areas_count": "number of areas of the run",
    "subsystems_count": "number of subsystems of the run",
    "dependencies_count": "number of dependencies of the run",
    "flows_count": "number of flows of the run",
    "area_id": "the area's key in the topology index (≤ 600 characters)",
    "path_prefixes": "paths the area covers",
    "file_count": "files in the item",
    "subsystem_id": "the subsystem's key in the topology index (≤ 600 characters)",
    "root_path": "the subsystem's root folder",
    "from_subsystem_id": "with `to_subsystem_id`, the dependency's key `from -> to`",
    "to_subsystem_id": "see `from_subsystem_id`",
    "evidence": "why the dependency was inferred (free-form objects)",
}

_ATTEMPT = (
    "Asserts the Attempt node `attempt_id` with status `{status}` and every payload field "
    "as a property; a DEPENDS_ON edge Attempt → Task when `task_id` is given."
)
_TASK = (
    "Asserts the Task node `task_id`{status}, every payload field as a property, a "
    "DEPENDS_ON edge Task → Target and one Task → Task per `depends_on` item."
)
_PR = (
    "Asserts the PullRequest node with status `{status}`; with `attempt_id`, a PRODUCED edge "
    "Attempt → PullRequest and `pr_url`/`pr_number` copied onto the attempt."
)
_TARGET = "Asserts the Target node `target_id` with every payload field as a property."
_TOPO = (
    "Not a graph node: the topology index keeps the newest payload per {key} "
    "(served by `GET /v1/topology/{endpoint}`)."
)


@dataclass(frozen=True)
class EventSpec:
    event_type: str
    builder: Callable[..., ev.Event]
    effect: str

    @property
    def fields(self) -> tuple[str, ...]:
        """The builder's payload arguments, in signature order."""
        params = inspect.signature(self.builder).parameters.values()
        return tuple(p.name for p in params if p.name != "extra" and p.kind is not p.VAR_KEYWORD)

    @property
    def required(self) -> tuple[str, ...]:
        params = inspect.signature(self.builder).parameters.values()
        return tuple(p.name for p in params if p.default is p.empty and p.kind is not p.VAR_KEYWORD)


SPECS: tuple[EventSpec, ...] = (
    EventSpec("target.registered", ev.target_registered, _TARGET),
    EventSpec("target.updated", ev.target_updated, _TARGET),
    EventSpec(
        "task.created",
        ev.task_created,
        _TASK.format(status=" (status `pending` or `payload.status`)"),
    ),
    EventSpec("task.updated", ev.task_updated, _TASK.format(status=" (status only when given)")),
    EventSpec("task.completed", ev.task_completed, _TASK.format(status=" with status `completed`")),
    EventSpec("task.blocked", ev.task_blocked, _TASK.format(status=" with status `blocked`")),
    EventSpec("task.failed", ev.task_failed, _TASK.format(status=" with status `failed`")),
    EventSpec("attempt.created", ev.attempt_created, _ATTEMPT.format(status="created")),
    EventSpec("attempt.started", ev.attempt_started, _ATTEMPT.format(status="running")),
    EventSpec("attempt.succeeded", ev.attempt_succeeded, _ATTEMPT.format(status="succeeded")),
    EventSpec(
        "attempt.failed",
        ev.attempt_failed,
        _ATTEMPT.format(status="failed") + " Listed by `GET /v1/failures`.",
    ),
    EventSpec(
        "attempt.invalidated",
        ev.attempt_invalidated,
        _ATTEMPT.format(status="invalidated")
        + " `invalidated` is sticky: no later event changes that status back."
        " `POST /v1/attempts/{id}/invalidate` queues this event for you.",
    ),
    EventSpec(
        "artifact.created",
        ev.artifact_created,
        "Asserts the Artifact node (`artifact_id`, else `sha256`) with every payload field; "
        "a PRODUCED edge Attempt → Artifact when `attempt_id` is given.",
    ),
    EventSpec("pr.created", ev.pr_created, _PR.format(status="open")),
    EventSpec("pr.merged", ev.pr_merged, _PR.format(status="merged")),
    EventSpec("pr.closed", ev.pr_closed, _PR.format(status="closed")),
    EventSpec(
        "topo.indexed",
        ev.topo_indexed,
        "Not a graph node: the newest one per target is the topology summary "
        "(`GET /v1/topology/summary`).",
    ),
    EventSpec(
        "topo.area.discovered",
        ev.topo_area_discovered,
        _TOPO.format(key="(target, `area_id`)", endpoint="areas"),
    ),
    EventSpec(
        "topo.subsystem.discovered",
        ev.topo_subsystem_discovered,
        _TOPO.format(key="(target, `subsystem_id`)", endpoint="subsystems"),
    ),
    EventSpec(
        "topo.dependency.discovered",
        ev.topo_dependency_discovered,
        _TOPO.format(key="(target, `from -> to`)", endpoint="dependencies"),
    ),
)

BY_TYPE = {spec.event_type: spec for spec in SPECS}

HEADER = """\
# Event vocabulary

<!-- Generated by `python -m leviathan_client.vocabulary > docs/events.md`; do not edit:
     tests/client/test_vocabulary.py fails when this file and the client differ. -->

The event types the control plane's graph projection (`storage/projection.py`) and topology
index (`storage/topology.py`) act on, with the payload fields they read. Build them with
[`leviathan_client.events`](../client/README.md): one builder per type, the fields as named
arguments (`extra={{...}}` for your own fields, kept on the node). Any other event type is
stored, listed and exported, but changes no graph.

Every builder also takes `event_id`, `key` (a stable id derived from the type and the key,
for events a worker may rebuild after a crash), `timestamp` (default: now, UTC) and
`actor_id`. `event_id` with the content is the idempotency key: the same event again is a
duplicate, new content under a known id is stored as its next revision. Node properties are
last-writer-wins by `(timestamp, event_id)`, so events may arrive in any order.

| event type | builder | read by |
|---|---|---|
{rows}
"""


def _row(spec: EventSpec) -> str:
    where = "topology index" if spec.event_type.startswith("topo.") else "graph"
    return f"| `{spec.event_type}` | `{spec.builder.__name__}` | {where} |"


def _section(spec: EventSpec) -> str:
    required = set(spec.required)
    args = ", ".join([*(f for f in spec.fields if f in required), "…"])
    call = f"`events.{spec.builder.__name__}({args})`"
    lines = [f"## `{spec.event_type}`", "", spec.effect, "", call]
    lines += ["", "| field | required | meaning |", "|---|---|---|"]
    for name in spec.fields:
        lines.append(f"| `{name}` | {'yes' if name in required else ''} | {FIELDS[name]} |")
    return "\n".join(lines)


def render() -> str:
    """The whole of docs/events.md."""
    rows = "\n".join(_row(s) for s in SPECS)
    return HEADER.format(rows=rows) + "\n" + "\n\n".join(_section(s) for s in SPECS) + "\n"


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
