"""Query API endpoints over both backends, seeded through EventStore.write_batch."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from storage.chain import ChainPoint
from storage.config import StorageSettings, create_store
from storage.views import ChainStatus
from tests import factories as f
from tests.query.query_support import AUTH, AppFactory
from webcore.store_ctx import STORE_KEY

pytestmark = pytest.mark.integration


async def get_json(client: Any, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_graph_summary(make_app: AppFactory, aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    body = await get_json(client, "/v1/graph/summary")
    assert body["nodes_by_type"]["Attempt"] == 3
    assert body["nodes_by_type"]["Task"] >= 3
    recent = body["recent_events"]
    assert len(recent) == 20
    assert set(recent[0]) == {
        "event_id", "timestamp", "event_type", "actor_id", "target", "attempt_id"
    }  # fmt: skip
    assert recent[0]["event_id"] == "att-3-05"  # last stored first


async def test_attempts_list_filters_and_pages(
    make_app: AppFactory, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    body = await get_json(client, "/v1/attempts")
    assert body["count"] == 3
    assert [a["attempt_id"] for a in body["attempts"]] == ["att-3", "att-2", "att-1"]
    att3 = body["attempts"][0]
    assert att3["target"] == "other-repo"
    assert att3["pr_number"] == 7
    assert att3["pr_url"].endswith("/pull/7")
    assert att3["status"] == "succeeded"
    only = await get_json(client, "/v1/attempts?target=other-repo")
    assert [a["attempt_id"] for a in only["attempts"]] == ["att-3"]
    failed = await get_json(client, "/v1/attempts?status=failed")
    assert [a["attempt_id"] for a in failed["attempts"]] == ["att-2"]
    seen: list[str] = []
    page = await get_json(client, "/v1/attempts?limit=2")
    seen += [a["attempt_id"] for a in page["attempts"]]
    assert page["next_cursor"]
    page = await get_json(client, f"/v1/attempts?limit=2&cursor={page['next_cursor']}")
    seen += [a["attempt_id"] for a in page["attempts"]]
    assert seen == ["att-3", "att-2", "att-1"]
    assert page["next_cursor"] is None


async def test_attempt_detail_and_404(make_app: AppFactory, aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    body = await get_json(client, "/v1/attempts/att-1")
    assert body["attempt_node"]["node_id"] == "att-1"
    assert [e["event_id"] for e in body["events"]] == [f"att-1-0{i}" for i in range(1, 6)]
    assert body["artifacts"]
    missing = await get_json(client, "/v1/attempts/nope", 404)
    assert "nope" in missing["detail"]


async def test_failures_recent_events_and_tasks(
    make_app: AppFactory, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    failures = await get_json(client, "/v1/failures")
    assert failures["count"] == 1
    assert failures["failures"][0]["error"] == "pytest exited with 1: 3 failed"
    assert (await get_json(client, "/v1/failures?target=other-repo"))["count"] == 0
    recent = await get_json(client, "/v1/events/recent?limit=3")
    assert [e["event_id"] for e in recent] == ["att-3-05", "att-3-04", "att-3-03"]
    assert all(len(e["hash"]) == 64 for e in recent)
    tasks = await get_json(client, "/v1/tasks?target=leviathan-demo")
    by_id = {t["task_id"]: t for t in tasks["tasks"]}
    assert by_id["task-backlog-3"]["depends_on"] == ["task-docs-1", "task-tests-2"]
    assert "task-tests-2" in by_id["task-docs-1"]["dependents"]
    detail = await get_json(client, "/v1/tasks/task-tests-2")
    assert [a["attempt_id"] for a in detail["attempts"]] == ["att-2"]
    assert "task-x" in (await get_json(client, "/v1/tasks/task-x", 404))["detail"]


async def test_event_export_pages_and_filters(
    make_app: AppFactory, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    ids: list[str] = []
    path = "/v1/events?limit=4"
    while True:
        page = await get_json(client, path)
        ids += [e["event_id"] for e in page["events"]]
        assert page["next_cursor"]  # also on the last page: a caught-up client resumes there
        if not page["events"]:
            break
        path = f"/v1/events?limit=4&after={page['next_cursor']}"
    assert len(ids) == len(set(ids)) == 10 + 5 + 5 + 3 + 5
    only = await get_json(client, "/v1/events?attempt_id=att-2&event_type=attempt.failed")
    assert [e["event_id"] for e in only["events"]] == ["att-2-03"]


async def test_verify_chain(make_app: AppFactory, aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    every = await get_json(client, "/v1/events/verify")
    assert every
    assert all(s["ok"] for s in every)
    assert sum(s["checked"] for s in every) == 28
    one = await get_json(client, f"/v1/events/verify?partition={every[0]['partition']}")
    assert one == every[0]


async def test_verify_endpoint_resumes_after_the_verified_prefix(
    make_app: AppFactory, aiohttp_client: AiohttpClient
) -> None:
    app = make_app()
    client = await aiohttp_client(app, headers=AUTH)
    first = await get_json(client, "/v1/events/verify")
    store = app[STORE_KEY]
    resumed_from: list[ChainPoint | None] = []
    walk = store.verify_chain

    async def spy(partition: int, after: ChainPoint | None = None) -> ChainStatus:
        resumed_from.append(after)
        return await walk(partition, after)

    store.verify_chain = spy  # type: ignore[method-assign]
    second = await get_json(client, "/v1/events/verify")
    assert second == first
    # each partition's check started at the end of the previous one, not at the genesis
    assert resumed_from == [ChainPoint(s["checked"], s["last_hash"]) for s in first]


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/v1/attempts?limit=0", "limit"),
        ("/v1/attempts?limit=1001", "limit"),
        ("/v1/attempts?limit=ten", "limit"),
        ("/v1/attempts?cursor=garbage", "cursor"),
        ("/v1/events?after=%21%21", "after"),
        ("/v1/events?limit=1001", "limit"),
        ("/v1/events/recent?limit=-1", "limit"),
        ("/v1/events/recent?limit=1001", "limit"),
        ("/v1/failures?limit=1001", "limit"),
        ("/v1/topology/areas", "target"),
        ("/v1/topology/summary?target=", "target"),
        ("/v1/topology/subsystems?target=t&limit=5001", "limit"),
        ("/v1/topology/dependencies?target=t&cursor=garbage", "cursor"),
        ("/v1/failures?limit=x", "limit"),
        ("/v1/tasks?limit=100000", "limit"),
        ("/v1/events/verify?partition=4", "partition"),
        ("/v1/events/verify?partition=-1", "partition"),
        ("/v1/attempts?target=" + "t" * 300, "target"),
    ],
)
async def test_bad_parameters_are_422_naming_them(
    make_app: AppFactory, aiohttp_client: AiohttpClient, path: str, name: str
) -> None:
    client = await aiohttp_client(make_app(), headers=AUTH)
    body = await get_json(client, path, 422)
    assert body["errors"][0]["loc"] == ["query", name]
    assert name in body["detail"]


async def test_restart_gives_same_answers(
    make_app: AppFactory, aiohttp_client: AiohttpClient
) -> None:
    paths = ["/v1/graph/summary", "/v1/attempts", "/v1/attempts/att-2", "/v1/failures",
             "/v1/events/recent", "/v1/events?limit=7", "/v1/tasks", "/v1/tasks/task-docs-1",
             "/v1/events/verify"]  # fmt: skip
    first = await aiohttp_client(make_app(), headers=AUTH)
    before = [await get_json(first, p) for p in paths]
    await first.close()
    second = await aiohttp_client(make_app(), headers=AUTH)
    assert [await get_json(second, p) for p in paths] == before


async def test_every_query_endpoint_needs_the_token(
    make_app: AppFactory, aiohttp_client: AiohttpClient
) -> None:
    client = await aiohttp_client(make_app())
    for path in ["/v1/graph/summary", "/v1/attempts", "/v1/attempts/att-1", "/v1/failures",
                 "/v1/events/recent", "/v1/events", "/v1/events/verify", "/v1/tasks",
                 "/v1/tasks/task-docs-1", "/v1/stats", "/v1/autonomy/status",
                 "/v1/topology/summary?target=t", "/v1/topology/areas?target=t"]:  # fmt: skip
        resp = await client.get(path, headers={"Authorization": "Bearer wrong"})
        assert resp.status == 401, path
    resp = await client.post("/v1/attempts/att-1/invalidate", json={"reason": "r"})
    assert resp.status == 401
    resp = await client.post("/v1/backlog/suggest", json={"target": "leviathan-demo"})
    assert resp.status == 401
    assert (await client.get("/openapi.json")).status == 200


async def test_topology_payloads_of_any_shape_are_served(
    seeded: StorageSettings, make_app: AppFactory, aiohttp_client: AiohttpClient
) -> None:
    """Workers may send any JSON in a topo payload: odd types pass through, never a 500."""
    odd = {"target_id": "odd", "commit_sha": 7, "rules_version": ["v", 1], "areas_count": "3",
           "extra": {"nested": None}}  # fmt: skip
    raw = f.body("odd", "bundle-odd", [
        f.event("topo.indexed", odd, event_id="odd-1"),
        f.event("topo.area.discovered", {"target_id": "odd", "area_id": 5}, event_id="odd-2"),
    ])  # fmt: skip
    store = create_store(seeded)
    await store.open()
    try:
        await store.write_batch(0, [f.envelope(raw)])
    finally:
        await store.close()
    client = await aiohttp_client(make_app(), headers=AUTH)
    summary = await get_json(client, "/v1/topology/summary?target=odd")
    assert (summary["commit_sha"], summary["rules_version"]) == (7, ["v", 1])
    assert summary["areas_count"] == 1  # not an integer in the payload: the index's count
    assert summary["extra"] == {"nested": None}
    areas = await get_json(client, "/v1/topology/areas?target=odd")
    assert areas["areas"] == [{"target_id": "odd", "area_id": 5}]
