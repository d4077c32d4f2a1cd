"""Test data generator modelled on the bundles Leviathan workers send.

The shapes follow the worker fixtures (attempt lifecycles with artifacts and PRs, failures
with ``error_summary``, single-event posts reusing ``bundle-{attempt_id}``, bootstrap bursts
of ``file.discovered`` events, tasks with ``depends_on``) but the project generates its own
so it never needs files from outside the repository.
"""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.envelope import Envelope
from storage.schema import Bundle

BASE_TIME = datetime(2026, 11, 28, 9, 0, 0, tzinfo=UTC)
_counter = itertools.count(1)


def nested(depth: int, leaf: Any) -> Any:
    """``leaf`` wrapped in ``depth`` levels of ``{"a": ...}`` (JSON nesting-limit tests)."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def ts(seconds: float) -> str:
    return (BASE_TIME + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def event(
    event_type: str,
    payload: dict[str, Any],
    *,
    at: float = 0,
    event_id: str | None = None,
    actor_id: str | None = None,
) -> dict[str, Any]:
    return {
        "event_id": event_id or f"evt-{next(_counter):08d}",
        "event_type": event_type,
        "timestamp": ts(at),
        "actor_id": actor_id,
        "payload": payload,
    }


def body(target: str, bundle_id: str, events: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"target": target, "bundle_id": bundle_id, "events": events, **extra}


def attempt_lifecycle(
    attempt_id: str,
    task_id: str,
    *,
    target: str = "leviathan-demo",
    outcome: str = "succeeded",
    pr_number: int | None = 42,
    start: float = 0,
    id_prefix: str | None = None,
) -> dict[str, Any]:
    """A worker's end-of-attempt bundle: created, started, artifact, PR, outcome."""
    prefix = id_prefix or attempt_id
    actor = f"worker-{attempt_id}"
    common = {
        "attempt_id": attempt_id,
        "task_id": task_id,
        "target_id": target,
        "attempt_number": 1,
    }
    events = [
        event(
            "attempt.created",
            {**common, "status": "created"},
            at=start,
            event_id=f"{prefix}-01",
            actor_id=actor,
        ),
        event(
            "attempt.started",
            {**common, "status": "running"},
            at=start + 2,
            event_id=f"{prefix}-02",
            actor_id=actor,
        ),
    ]
    artifacts: list[dict[str, Any]] = []
    if outcome == "succeeded":
        sha = hashlib.sha256(attempt_id.encode()).hexdigest()
        events.append(
            event(
                "artifact.created",
                {
                    "artifact_id": f"artifact-{sha[:8]}",
                    "attempt_id": attempt_id,
                    "sha256": sha,
                    "artifact_type": "log",
                    "size_bytes": 20480,
                    "storage_path": f"artifacts/{sha[:2]}/{sha[:8]}",
                },
                at=start + 190,
                event_id=f"{prefix}-03",
                actor_id=actor,
            )
        )
        pr_url = f"https://github.com/example/{target}/pull/{pr_number or attempt_id}"
        pr: dict[str, Any] = {
            "attempt_id": attempt_id,
            "pr_url": pr_url,
            "title": f"work on {task_id}",
            "state": "open",
        }
        if pr_number is not None:
            pr["pr_number"] = pr_number
        events.append(
            event("pr.created", pr, at=start + 200, event_id=f"{prefix}-04", actor_id=actor)
        )
        events.append(
            event(
                "attempt.succeeded",
                {
                    "attempt_id": attempt_id,
                    "status": "succeeded",
                    "branch_name": f"agent/{task_id}",
                    "commit_sha": sha[:7],
                    "pr_url": pr_url,
                    **({"pr_number": pr_number} if pr_number else {}),
                },
                at=start + 201,
                event_id=f"{prefix}-05",
                actor_id=actor,
            )
        )
        artifacts.append(
            {"sha256": sha, "kind": "log", "uri": f"file:///artifacts/{sha[:8]}", "size": 20480}
        )
    else:
        events.append(
            event(
                "attempt.failed",
                {
                    "attempt_id": attempt_id,
                    "status": "failed",
                    "failure_type": "execution_failed",
                    "error_summary": "pytest exited with 1: 3 failed",
                },
                at=start + 164,
                event_id=f"{prefix}-03",
                actor_id=actor,
            )
        )
    return body(target, f"bundle-{attempt_id}", events, artifacts=artifacts)


def single_event_posts(
    attempt_id: str, task_id: str, *, target: str = "leviathan-demo"
) -> list[dict[str, Any]]:
    """Workers that post each step on its own: one event per body, same bundle_id."""
    lifecycle = attempt_lifecycle(attempt_id, task_id, target=target, pr_number=None)
    return [body(target, f"bundle-{attempt_id}", [ev], artifacts=[]) for ev in lifecycle["events"]]


def tasks_with_dependencies(target: str = "leviathan-demo") -> dict[str, Any]:
    """A target and three tasks, the second and third depending on earlier ones."""
    events = [
        event(
            "target.registered",
            {
                "target_id": target,
                "name": target,
                "repo_url": f"https://github.com/example/{target}",
                "default_branch": "main",
            },
            at=-3600,
            event_id=f"{target}-tgt",
        ),
        event(
            "task.created",
            {
                "task_id": "task-docs-1",
                "target_id": target,
                "title": "Architecture overview",
                "scope": "docs",
                "priority": "high",
            },
            at=-1800,
            event_id=f"{target}-t1",
        ),
        event(
            "task.created",
            {
                "task_id": "task-tests-2",
                "target_id": target,
                "title": "Test the links",
                "scope": "tests",
                "depends_on": ["task-docs-1"],
            },
            at=-1799,
            event_id=f"{target}-t2",
        ),
        event(
            "task.created",
            {
                "task_id": "task-backlog-3",
                "target_id": target,
                "title": "Propose tasks",
                "scope": "backlog",
                "depends_on": ["task-docs-1", "task-tests-2"],
            },
            at=-1798,
            event_id=f"{target}-t3",
        ),
        event(
            "task.completed",
            {"task_id": "task-docs-1", "target_id": target},
            at=300,
            event_id=f"{target}-t1-done",
        ),
    ]
    return body(target, "bundle-backlog-sync", events)


def bootstrap_burst(
    files: int, *, target: str = "leviathan-demo", bundle_id: str | None = None
) -> dict[str, Any]:
    """A repo indexer's burst: thousands of ``file.discovered`` events with stable ids."""
    events = [
        event("bootstrap.started", {"target_id": target}, event_id=f"bootstrap-{target}-started")
    ]
    for i in range(files):
        path = f"src/pkg_{i // 50}/mod_{i}.py"
        digest = hashlib.sha256(f"{target}/{path}".encode()).hexdigest()[:12]
        events.append(
            event(
                "file.discovered",
                {"target_id": target, "path": path, "language": "python", "size_bytes": 1000 + i},
                at=5,
                event_id=f"file-{digest}",
            )
        )
    events.append(
        event(
            "repo.indexed",
            {"target_id": target, "files": files},
            at=60,
            event_id=f"repo-indexed-{target}",
        )
    )
    return body(target, bundle_id or f"bootstrap-{target}", events, artifacts=None)


def envelope(
    raw: dict[str, Any], entry_id: str = "1-0", received_at: float = 1_764_320_000.0
) -> Envelope:
    """A decoded stream entry as the consumer hands it to storage."""
    return Envelope(
        bundle=Bundle.model_validate(raw),
        received_at=received_at,
        token_label="test",
        entry_id=entry_id,
    )


def topology_run(
    target: str = "leviathan-demo",
    commit_sha: str = "9c1e2f0a7b",
    *,
    at: float = 0,
    areas: tuple[str, ...] = ("docs", "tests", "tools"),
    subsystems: tuple[str, ...] = ("services/api", "services/db", "tools/cli"),
    dependencies: tuple[tuple[str, str], ...] = (("services/api", "services/db"),),
) -> dict[str, Any]:
    """The topology worker's bundle: started, one event per area/subsystem/dependency,
    the ``topo.indexed`` summary, completed. Ids are deterministic per (target, commit),
    so indexing the same commit again re-sends the same ids with new timestamps."""
    short, rules = commit_sha[:8], "topo_rules_v1"
    common = {"target_id": target, "commit_sha": commit_sha, "rules_version": rules}
    actor = "topology-indexer"
    events = [event("topo.started", dict(common), at=at, event_id=f"topo-started-{target}-{short}",
                    actor_id=actor)]  # fmt: skip
    for name in areas:
        area = {"area_id": f"area/{name}", "path_prefixes": [name], "file_count": 10 + len(name),
                **common}  # fmt: skip
        events.append(event("topo.area.discovered", area, at=at,
                            event_id=f"topo-area-area-{name}-{short}", actor_id=actor))  # fmt: skip
    for root in subsystems:
        sub = {"subsystem_id": f"subsystem/{root}", "area_id": f"area/{root.split('/')[0]}",
               "root_path": root, "languages": {".py": 1.0}, "file_count": 5, **common}  # fmt: skip
        events.append(event("topo.subsystem.discovered", sub, at=at,
                            event_id=f"topo-subsystem-subsystem-{root.replace('/', '-')}-{short}",
                            actor_id=actor))  # fmt: skip
    for i, (src, dst) in enumerate(dependencies):
        dep = {**common, "from_subsystem_id": f"subsystem/{src}",
               "to_subsystem_id": f"subsystem/{dst}",
               "evidence": [{"kind": "py_import", "from_file": f"{src}/main.py",
                             "to_module": dst.replace("/", "."),
                             "mapped_subsystem": f"subsystem/{dst}"}]}  # fmt: skip
        events.append(event("topo.dependency.discovered", dep, at=at,
                            event_id=f"topo-dep-{i}-{short}", actor_id=actor))  # fmt: skip
    summary = {**common, "areas_count": len(areas), "subsystems_count": len(subsystems),
               "dependencies_count": len(dependencies)}  # fmt: skip
    events.append(event("topo.indexed", summary, at=at, event_id=f"topo-indexed-{target}-{short}",
                        actor_id=actor))  # fmt: skip
    events.append(event("topo.completed", {**common, "status": "completed"}, at=at,
                        event_id=f"topo-completed-{target}-{short}", actor_id=actor))  # fmt: skip
    return body(target, f"bundle-topology-{target}-{short}", events, artifacts=[])


# File contents of the two bootstrap runs of bootstrap_rerun: README changed between them,
# the two namespace files are identical (one file-<sha12> id within a run), the rest kept.
_RUN_FILES = (
    {
        "README.md": "# demo\n\n",
        "ops/k8s/a/namespace.yaml": "ns",
        "ops/k8s/b/namespace.yaml": "ns",
        "src/app.py": "print()\n",
    },
    {
        "README.md": "# demo 2\n",
        "ops/k8s/a/namespace.yaml": "ns",
        "ops/k8s/b/namespace.yaml": "ns",
        "src/app.py": "print()\n",
    },
)


def bootstrap_rerun(
    target: str = "demo",
    *,
    commits: tuple[str, str] = ("3f1c2a9", "8b77d01"),
    target_event: bool = False,
) -> list[dict[str, Any]]:
    """The same repository bootstrapped twice, a week apart, as the repo indexer posts it.

    Its ids are deterministic: ``bootstrap-{target}-started``, ``repo-indexed-{target}`` and
    ``bootstrap-{target}-completed`` come again with a new commit and timestamp, and files
    are ``file-{sha256(content)[:12]}``, so identical files share an id within a run and
    unchanged files keep theirs across runs. Every one of these events is information to
    keep (stored as revisions of their ids). ``target_event`` adds a ``target.updated``
    with the deterministic id ``target-{target}-indexed`` carrying the run's commit, so
    the graph shows which run is the latest.
    """
    bodies = []
    for run, (files, commit) in enumerate(zip(_RUN_FILES, commits, strict=True), start=1):
        attempt = f"attempt-boot-{run}"
        start = (run - 1) * 7 * 86400 - 8 * 86400  # 2026-11-20 and 2026-11-27, 09:00
        common = {"target_id": target, "attempt_id": attempt}

        def ev(kind: str, payload: dict[str, Any], at: float, event_id: str) -> dict[str, Any]:
            return event(kind, payload, at=at, event_id=event_id, actor_id="worker-boot")

        events = [
            ev("bootstrap.started", {**common, "commit_sha": commit}, start,
               f"bootstrap-{target}-started"),
        ]  # fmt: skip
        for path, content in files.items():
            sha = hashlib.sha256(content.encode()).hexdigest()
            payload = {**common, "path": path, "sha256": sha, "size": len(content)}
            events.append(ev("file.discovered", payload, start + 1, f"file-{sha[:12]}"))
        events.append(
            ev("repo.indexed", {**common, "commit_sha": commit, "files": len(files)}, start + 2,
               f"repo-indexed-{target}")
        )  # fmt: skip
        if target_event:
            events.append(
                ev("target.updated", {"target_id": target, "commit_sha": commit}, start + 2,
                   f"target-{target}-indexed")
            )  # fmt: skip
        events.append(
            ev("bootstrap.completed", {**common, "commit_sha": commit}, start + 3,
               f"bootstrap-{target}-completed")
        )  # fmt: skip
        bodies.append(body(target, f"bundle-{attempt}", events))
    return bodies
