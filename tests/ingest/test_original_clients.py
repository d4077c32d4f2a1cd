"""The original Leviathan's own clients against this control plane, on both backends.

Speaks as they do, through the real ingest app (``create_app``: auth, errors, publisher,
backpressure) over real Redis, with a real consumer Reader writing NDJSON or PostgreSQL:

- the workers post their bundles (attempt lifecycles, a failure, single-event posts,
  tasks, a bootstrap burst, a topology run) as they always did, without ``?wait=``;
- ``leviathanctl`` reads: ``attempts-list --limit 1000``, ``graph-summary`` (totals),
  ``attempts-show``, ``failures-recent``, ``invalidate``;
- the operator console calls ``/v1/autonomy/status`` on every page, reads
  ``/v1/events/recent?limit=200`` and the topology endpoints, and asks for backlog
  suggestions.

Every answer is checked field by field against the original's response shapes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from consumer.metrics import ConsumerMetrics
from consumer.reader import Reader, ensure_group
from consumer.settings import ConsumerSettings
from ingest.settings import IngestSettings
from storage.config import create_store
from storage.queue import resolve
from tests import factories as f
from tests.ingest.ingest_support import AUTH, LAYOUT, ClientFactory, client_for, make_settings

pytestmark = pytest.mark.integration

# Response keys of the original control plane (its pydantic response models).
ATTEMPT_KEYS = {"attempt_id", "task_id", "target", "status", "timestamp", "pr_url", "pr_number"}
RECENT_KEYS = {"event_id", "timestamp", "event_type", "actor_id", "target", "attempt_id"}
FAILURE_KEYS = {"attempt_id", "task_id", "target", "error", "timestamp"}
EVENT_KEYS = {"event_id", "event_type", "timestamp", "actor_id", "payload"}
NODE_KEYS = {"node_id", "node_type", "properties", "created_at", "updated_at"}
# AttemptNode of the original's graph schema: always present in properties
ATTEMPT_PROPS = {"node_id", "node_type", "created_at", "created_by", "attempt_id", "task_id",
                 "attempt_number", "status", "started_at", "completed_at", "exit_code",
                 "failure_reason"}  # fmt: skip
BACKLOG_KEYS = {"status", "attempt_id", "pr_url", "tasks_proposed", "message"}
TOPO_SUMMARY_KEYS = {"target_id", "commit_sha", "rules_version", "areas_count",
                     "subsystems_count", "dependencies_count", "flows_count"}  # fmt: skip

Client = TestClient[Any, Any]


@dataclass
class Plane:
    """The ingest app's client and a way to run the consumer over what it queued."""

    client: Client
    settings: IngestSettings
    consumer: ConsumerSettings
    redis: aioredis.Redis
    posted: int = 0  # events the workers posted

    async def drain(self) -> int:
        """Real Reader passes over every partition until nothing is left to write."""
        store = create_store(self.consumer)
        await store.open()
        try:
            reader = Reader(self.redis, store, self.consumer, ConsumerMetrics())
            total = 0
            while True:
                written = 0
                for partition in range(LAYOUT.partitions):
                    entries = await reader.read_once(partition)
                    if entries:
                        written += 1 + (await reader.handle_batch(partition, entries)).stored
                if not written:
                    return total
                total += written
        finally:
            await store.close()

    async def post(self, body: dict[str, Any], path: str = "/v1/events/ingest") -> Any:
        resp = await self.client.post(path, json=body, headers=AUTH)
        assert resp.status in (200, 202), await resp.text()
        self.posted += len(body.get("events", []))
        return await resp.json()

    async def get(self, path: str, status: int = 200) -> Any:
        resp = await self.client.get(path, headers=AUTH)
        assert resp.status == status, await resp.text()
        return await resp.json()


@pytest.fixture(params=["ndjson", "postgres"])
def storage_args(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> dict[str, Any]:
    base: dict[str, Any] = {"partitions": LAYOUT.partitions, "redis_url": redis_url}
    if request.param == "postgres":
        base.update(backend="postgres", postgres_dsn=request.getfixturevalue("postgres_url"))
    else:
        base.update(backend="ndjson", ndjson_dir=tmp_path / "log")
    return base


async def make_plane(
    aiohttp_client: ClientFactory, args: dict[str, Any], tmp_path: Path, **extra: Any
) -> Plane:
    settings = make_settings(**args, autonomy_config_path=tmp_path / "autonomy.yaml", **extra)
    consumer = ConsumerSettings(**args, consumer_name="original-clients", block_ms=10)
    redis = aioredis.Redis.from_url(args["redis_url"])
    await ensure_group(redis, LAYOUT)
    client = await client_for(aiohttp_client, settings, redis)
    return Plane(client, settings, consumer, redis)


@pytest.fixture
async def plane(
    aiohttp_client: ClientFactory, storage_args: dict[str, Any], tmp_path: Path
) -> AsyncIterator[Plane]:
    """The plane after the workers posted a working day, consumed and stored."""
    made = await make_plane(aiohttp_client, storage_args, tmp_path)
    await made.post(f.tasks_with_dependencies())
    await made.post(f.bootstrap_burst(200))  # > 200 events in all
    for i in range(11):  # more than the original's default page of 10
        await made.post(f.attempt_lifecycle(f"attempt-{i:02d}", "task-docs-1", start=i * 600))
    await made.post(
        f.attempt_lifecycle("attempt-bad", "task-tests-2", outcome="failed", start=9000)
    )
    for single in f.single_event_posts("attempt-solo", "task-backlog-3"):
        await made.post(single)
    await made.post(f.topology_run(commit_sha="9c1e2f0a7b", at=100))
    await made.drain()
    yield made
    await made.redis.aclose()


async def test_cli_attempts_list_default_10_and_limit_1000(plane: Plane) -> None:
    default = await plane.get("/v1/attempts")
    assert default["count"] == len(default["attempts"]) == 10
    everything = await plane.get("/v1/attempts?limit=1000")  # attempts-list --limit 1000
    assert everything["count"] == 13
    assert everything["next_cursor"] is None
    for attempt in everything["attempts"]:
        assert set(attempt) == ATTEMPT_KEYS
    by_id = {a["attempt_id"]: a for a in everything["attempts"]}
    assert by_id["attempt-03"] == {
        "attempt_id": "attempt-03",
        "task_id": "task-docs-1",
        "target": "leviathan-demo",
        "status": "succeeded",
        "timestamp": f.ts(3 * 600 + 201),
        "pr_url": "https://github.com/example/leviathan-demo/pull/42",
        "pr_number": 42,
    }
    assert by_id["attempt-bad"]["status"] == "failed"
    assert by_id["attempt-solo"]["pr_number"] is None  # its PR came without a number


async def test_cli_graph_summary_totals(plane: Plane) -> None:
    summary = await plane.get("/v1/graph/summary")
    assert {"nodes_by_type", "edges_by_type", "recent_events", "total_nodes", "total_edges"} == set(
        summary
    )
    assert summary["nodes_by_type"]["Attempt"] == 13
    assert summary["nodes_by_type"]["Artifact"] == 12
    assert summary["total_nodes"] == sum(summary["nodes_by_type"].values()) > 13
    assert summary["total_edges"] == sum(summary["edges_by_type"].values()) > 0
    assert len(summary["recent_events"]) == 20
    for recent in summary["recent_events"]:
        assert set(recent) == RECENT_KEYS


async def test_cli_attempts_show_in_the_original_node_shape(plane: Plane) -> None:
    detail = await plane.get("/v1/attempts/attempt-03")
    assert set(detail) == {"attempt_node", "events", "artifacts"}
    node = detail["attempt_node"]
    assert set(node) == NODE_KEYS
    assert (node["node_id"], node["node_type"]) == ("attempt-03", "Attempt")
    assert node["created_at"] == f.ts(1800)
    assert node["updated_at"] == f.ts(1800 + 201)
    props = node["properties"]
    assert set(props) >= ATTEMPT_PROPS
    assert props["node_id"] == "attempt-03"
    assert props["node_type"] == "Attempt"
    assert props["created_by"] == "worker-attempt-03"
    assert props["attempt_number"] == 1
    assert props["status"] == "succeeded"
    assert props["exit_code"] is None
    assert props["failure_reason"] is None
    assert [e["event_type"] for e in detail["events"]] == [
        "attempt.created", "attempt.started", "artifact.created", "pr.created",
        "attempt.succeeded",
    ]  # fmt: skip
    for ev in detail["events"]:
        assert set(ev) >= EVENT_KEYS
    [artifact] = detail["artifacts"]  # the event and the bundle's entry: one artifact
    assert set(artifact) == NODE_KEYS
    assert artifact["node_type"] == "Artifact"
    sha = artifact["properties"]["sha256"]
    assert artifact["node_id"] == f"artifact-{sha[:8]}"
    assert {k: artifact["properties"][k] for k in ("kind", "uri", "size")} == {
        "kind": "log",
        "uri": f"file:///artifacts/{sha[:8]}",
        "size": 20480,
    }

    failed = (await plane.get("/v1/attempts/attempt-bad"))["attempt_node"]["properties"]
    assert failed["failure_reason"] == "pytest exited with 1: 3 failed"
    assert failed["status"] == "failed"
    assert (await plane.get("/v1/attempts/attempt-bad"))["artifacts"] == []
    missing = await plane.get("/v1/attempts/attempt-nope", 404)
    assert "attempt-nope" in missing["detail"]


async def test_cli_failures_recent_and_invalidate(plane: Plane) -> None:
    failures = await plane.get("/v1/failures")
    assert failures["count"] == 1
    [failure] = failures["failures"]
    assert set(failure) >= FAILURE_KEYS
    assert failure["attempt_id"] == "attempt-bad"
    assert failure["error"] == "pytest exited with 1: 3 failed"
    assert (await plane.get("/v1/failures?limit=1000"))["count"] == 1

    # FastAPI validates the body before the handler looks the attempt up
    resp = await plane.client.post("/v1/attempts/nope/invalidate", json={}, headers=AUTH)
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["body", "reason"]
    resp = await plane.client.post(
        "/v1/attempts/nope/invalidate", json={"reason": "x"}, headers=AUTH
    )
    assert resp.status == 404
    resp = await plane.client.post(
        "/v1/attempts/attempt-03/invalidate", json={"reason": "reverted"}, headers=AUTH
    )
    assert resp.status == 202
    await plane.drain()
    shown = await plane.get("/v1/attempts/attempt-03")
    assert shown["attempt_node"]["properties"]["status"] == "invalidated"


async def test_console_recent_events_default_200(plane: Plane) -> None:
    recent = await plane.get("/v1/events/recent")
    total = plane.posted
    assert total > 200
    assert len(recent) == min(200, total)
    for ev in recent:
        assert set(ev) >= EVENT_KEYS
    assert len(await plane.get("/v1/events/recent?limit=1000")) == total


async def test_console_topology(plane: Plane) -> None:
    summary = await plane.get("/v1/topology/summary?target=leviathan-demo")
    assert set(summary) >= TOPO_SUMMARY_KEYS
    assert {k: summary[k] for k in TOPO_SUMMARY_KEYS} == {
        "target_id": "leviathan-demo",
        "commit_sha": "9c1e2f0a7b",
        "rules_version": "topo_rules_v1",
        "areas_count": 3,
        "subsystems_count": 3,
        "dependencies_count": 1,
        "flows_count": 0,
    }
    assert summary["indexed_at"] == f.ts(100)
    areas = await plane.get("/v1/topology/areas?target=leviathan-demo")
    assert areas["count"] == 3
    assert [a["area_id"] for a in areas["areas"]] == ["area/docs", "area/tests", "area/tools"]
    assert areas["areas"][0] == {
        "area_id": "area/docs",
        "path_prefixes": ["docs"],
        "file_count": 14,
        "target_id": "leviathan-demo",
        "commit_sha": "9c1e2f0a7b",
        "rules_version": "topo_rules_v1",
    }
    subsystems = await plane.get("/v1/topology/subsystems?target=leviathan-demo")
    assert [s["root_path"] for s in subsystems["subsystems"]] == [
        "services/api", "services/db", "tools/cli",
    ]  # fmt: skip
    deps = await plane.get("/v1/topology/dependencies?target=leviathan-demo")
    [dep] = deps["dependencies"]
    assert dep["from_subsystem_id"] == "subsystem/services/api"
    assert dep["evidence"][0]["kind"] == "py_import"
    page = await plane.get("/v1/topology/areas?target=leviathan-demo&limit=2")
    rest = await plane.get(f"/v1/topology/areas?target=leviathan-demo&cursor={page['next_cursor']}")
    assert [a["area_id"] for a in page["areas"] + rest["areas"]] == [
        "area/docs", "area/tests", "area/tools",
    ]  # fmt: skip
    assert "nowhere" in (await plane.get("/v1/topology/summary?target=nowhere", 404))["detail"]
    empty = await plane.get("/v1/topology/areas?target=nowhere")
    assert (empty["areas"], empty["count"]) == ([], 0)


@pytest.mark.parametrize(
    ("content", "enabled", "source"),
    [
        (None, True, "default (config not mounted)"),
        ("autonomy_enabled: false\n", False, "configmap:"),
        ("autonomy_enabled: true\nmax_open_prs: 1\n", True, "configmap:"),
        ("autonomy_enabled: [\n", False, "error: "),
        ("autonomy_enabled: 'no'\n", False, "error: "),
        ("- a list\n", False, "error: "),
        ("", False, "error: "),
    ],
)
async def test_console_autonomy_status(
    aiohttp_client: ClientFactory,
    storage_args: dict[str, Any],
    tmp_path: Path,
    content: str | None,
    enabled: bool,
    source: str,
) -> None:
    plane = await make_plane(aiohttp_client, storage_args, tmp_path)
    try:
        if content is not None:
            (tmp_path / "autonomy.yaml").write_text(content)
        status = await plane.get("/v1/autonomy/status")
        assert set(status) == {"autonomy_enabled", "source"}
        assert status["autonomy_enabled"] is enabled
        if content is None:  # the original's exact words, no path
            assert status["source"] == source
        else:
            assert status["source"].startswith(source)
            assert str(tmp_path / "autonomy.yaml") in status["source"]
    finally:
        await plane.redis.aclose()


async def test_autonomy_status_of_an_unreadable_path_is_not_a_500(
    aiohttp_client: ClientFactory, storage_args: dict[str, Any], tmp_path: Path
) -> None:
    plane = await make_plane(aiohttp_client, storage_args, tmp_path)
    try:
        (tmp_path / "autonomy.yaml").mkdir()  # a directory where the file should be
        status = await plane.get("/v1/autonomy/status")
        assert status["autonomy_enabled"] is False
        assert status["source"].startswith("error: cannot read ")
    finally:
        await plane.redis.aclose()


async def test_console_backlog_suggest(plane: Plane) -> None:
    resp = await plane.client.post("/v1/backlog/suggest", json={}, headers=AUTH)
    assert resp.status == 422
    assert (await resp.json())["errors"][0]["loc"] == ["body", "target"]
    assert await plane.drain() == 0  # nothing queued
    answer = await plane.post({"target": "leviathan-demo"}, "/v1/backlog/suggest")
    assert set(answer) >= BACKLOG_KEYS
    assert answer["status"] == "accepted"
    assert (answer["attempt_id"], answer["pr_url"], answer["tasks_proposed"]) == (None,) * 3
    assert "leviathan-demo" in answer["message"]
    await plane.drain()
    stored = await plane.get("/v1/events?event_type=backlog.suggest.requested")
    [event] = stored["events"]
    assert event["event_id"] == answer["event_id"]
    assert event["payload"] == {"target_id": "leviathan-demo"}
    assert event["target"] == "leviathan-demo"


async def test_backlog_suggest_goes_through_backpressure(
    aiohttp_client: ClientFactory, storage_args: dict[str, Any], tmp_path: Path
) -> None:
    plane = await make_plane(aiohttp_client, storage_args, tmp_path, queue_high_water=1)
    try:
        for n in range(2):  # lag 2 > high water 1
            await plane.post(f.body("repo-a", f"b-{n}", [f.event("x.y", {})]))
        resp = await plane.client.post(
            "/v1/backlog/suggest", json={"target": "leviathan-demo"}, headers=AUTH
        )
        assert resp.status == 503
        assert resp.headers["Retry-After"]
        streams = [await resolve(plane.redis.xlen(s)) for s in LAYOUT.streams()]
        assert sum(streams) == 2
    finally:
        await plane.redis.aclose()


async def _drain_forever(plane: Plane) -> None:
    while True:
        await plane.drain()
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(("default_wait", "status"), [(0.0, 202), (10.0, 200)])
async def test_default_wait_gives_workers_read_your_writes(
    aiohttp_client: ClientFactory,
    storage_args: dict[str, Any],
    tmp_path: Path,
    default_wait: float,
    status: int,
) -> None:
    plane = await make_plane(
        aiohttp_client, storage_args, tmp_path, default_wait_seconds=default_wait
    )
    consumer = asyncio.create_task(_drain_forever(plane))
    try:
        resp = await plane.client.post(
            "/v1/events/ingest", json=f.attempt_lifecycle("attempt-w", "task-w"), headers=AUTH
        )
        assert resp.status == status, await resp.text()
        if status == 200:  # stored before the answer: the next read sees it
            assert (await resp.json())["status"] == "ok"
            assert (await plane.get("/v1/attempts/attempt-w"))["attempt_node"]["node_id"]
        else:  # off by default: an explicit ?wait= still waits
            resp = await plane.client.post(
                "/v1/events/ingest?wait=10",
                json=f.body("repo-a", "bundle-y", [f.event("x.y", {})]),
                headers=AUTH,
            )
            assert resp.status == 200
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        # nothing consumes now: an explicit short ?wait= wins over a long default
        async with asyncio.timeout(max(default_wait, 1) / 2):
            explicit = await plane.client.post(
                "/v1/events/ingest?wait=0.05",
                json=f.body("repo-a", "bundle-x", [f.event("x.y", {})]),
                headers=AUTH,
            )
        assert explicit.status == 202
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await plane.redis.aclose()
