"""Realistic bundle shapes for ``leviathan-cp bench`` (the load generator's data side).

Pipeline position: client side, in front of the ingest tier. Mirrors the shapes of
tests/factories.py (attempt lifecycles with artifacts and PRs, failures, single-event posts
reusing ``bundle-{attempt_id}``, bursts of ``file.discovered``) but lives in the installed
package because an operator's ``leviathan-cp`` cannot import the tests.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

_BASE = datetime(2026, 11, 28, 9, 0, 0, tzinfo=UTC)


def _ts(seconds: float) -> str:
    return (_BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def _event(
    eid: str, etype: str, payload: dict[str, Any], at: float, actor: str | None
) -> dict[str, Any]:
    return {
        "event_id": eid,
        "event_type": etype,
        "timestamp": _ts(at),
        "actor_id": actor,
        "payload": payload,
    }


@dataclass
class BundleMaker:
    """Makes the next bundle of one simulated worker; ids are unique per (run, worker, n)."""

    run_id: str
    worker: int
    burst_size: int
    rng: random.Random
    target: str
    n: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)

    def next(self, dup_ratio: float) -> list[dict[str, Any]]:
        """Bodies to post next (several for single-event workers); may repeat old ones."""
        if self.sent and self.rng.random() < dup_ratio:
            return [self.rng.choice(self.sent)]
        self.n += 1
        roll = self.rng.random()
        attempt = f"{self.run_id}-w{self.worker}-a{self.n}"
        if roll < 0.05 and self.burst_size > 0:
            bodies = [self._burst(attempt)]
        elif roll < 0.25:
            bodies = self._singles(attempt)
        else:
            bodies = [self._lifecycle(attempt, failed=roll > 0.85)]
        # Keep a bounded sample for duplicates so memory stays flat on long runs.
        if len(self.sent) < 64:
            self.sent.extend(bodies)
        return bodies

    def _lifecycle(self, attempt: str, *, failed: bool) -> dict[str, Any]:
        actor = f"worker-{attempt}"
        task = f"task-{self.worker}-{self.n % 7}"
        common = {"attempt_id": attempt, "task_id": task, "target_id": self.target}
        start = float(self.n)
        events = [
            _event(
                f"{attempt}-01", "attempt.created", {**common, "status": "created"}, start, actor
            ),
            _event(
                f"{attempt}-02",
                "attempt.started",
                {**common, "status": "running"},
                start + 2,
                actor,
            ),
        ]
        artifacts: list[dict[str, Any]] = []
        if failed:
            events.append(
                _event(
                    f"{attempt}-03",
                    "attempt.failed",
                    {
                        "attempt_id": attempt,
                        "status": "failed",
                        "failure_type": "execution_failed",
                        "error_summary": "pytest exited with 1: 3 failed",
                    },
                    start + 164,
                    actor,
                )
            )
            return {"target": self.target, "bundle_id": f"bundle-{attempt}", "events": events}
        sha = hashlib.sha256(attempt.encode()).hexdigest()
        pr_url = f"https://github.com/example/{self.target}/pull/{self.n}"
        events += [
            _event(
                f"{attempt}-03",
                "artifact.created",
                {
                    "artifact_id": f"artifact-{sha[:8]}",
                    "attempt_id": attempt,
                    "sha256": sha,
                    "artifact_type": "log",
                    "size_bytes": 20480,
                    "storage_path": f"artifacts/{sha[:2]}/{sha[:8]}",
                },
                start + 190,
                actor,
            ),
            _event(
                f"{attempt}-04",
                "pr.created",
                {"attempt_id": attempt, "pr_url": pr_url, "pr_number": self.n, "state": "open"},
                start + 200,
                actor,
            ),
            _event(
                f"{attempt}-05",
                "attempt.succeeded",
                {
                    "attempt_id": attempt,
                    "status": "succeeded",
                    "pr_url": pr_url,
                    "pr_number": self.n,
                },
                start + 201,
                actor,
            ),
        ]
        artifacts.append(
            {"sha256": sha, "kind": "log", "uri": f"file:///a/{sha[:8]}", "size": 20480}
        )
        return {
            "target": self.target,
            "bundle_id": f"bundle-{attempt}",
            "events": events,
            "artifacts": artifacts,
        }

    def _singles(self, attempt: str) -> list[dict[str, Any]]:
        whole = self._lifecycle(attempt, failed=False)
        return [
            {
                "target": self.target,
                "bundle_id": whole["bundle_id"],
                "events": [ev],
                "artifacts": [],
            }
            for ev in whole["events"]
        ]

    def _burst(self, attempt: str) -> dict[str, Any]:
        events = [
            _event(
                f"{attempt}-f{i}",
                "file.discovered",
                {
                    "target_id": self.target,
                    "path": f"src/pkg_{i // 50}/mod_{i}.py",
                    "language": "python",
                    "size_bytes": 1000 + i,
                },
                5,
                None,
            )
            for i in range(self.burst_size)
        ]
        return {"target": self.target, "bundle_id": f"bootstrap-{attempt}", "events": events}
