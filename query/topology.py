"""GET /v1/topology/summary|areas|subsystems|dependencies?target=…: the repository map.

Pipeline position: read endpoints over storage's topology index (:mod:`storage.topology`),
which both backends keep in the write transaction of the topology worker's events, so
each answer is an index lookup whatever the size of the event log.

Shapes (the original's): the summary is the newest ``topo.indexed`` payload of the target
(``target_id``, ``commit_sha``, ``rules_version``, ``*_count``; ``flows_count`` 0 when the
worker sent none) plus ``indexed_at`` and ``event_id``; 404 when the target has none. A
count the payload lacks is the number of items the index holds. The lists are
``{target_id, areas|subsystems|dependencies: [payload…], count, next_cursor}``, the newest
payload of each item by item key; ``count`` is the length of this page.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from storage.topology import AREA, DEPENDENCY, SUBSYSTEM
from webcore.params import bad_param, limit_param, not_found, page_of, str_param
from webcore.store_ctx import STORE_KEY

LIMIT = (1000, 5000)  # default, maximum items per page
COUNT_KEYS = {AREA: "areas_count", SUBSYSTEM: "subsystems_count", DEPENDENCY: "dependencies_count"}


class TopologySummaryBody(BaseModel):
    """The summary; other keys of the worker's payload are passed through."""

    model_config = ConfigDict(extra="allow")

    target_id: str
    commit_sha: Any = None  # as the worker sent them (a string from the original's)
    rules_version: Any = None
    areas_count: int
    subsystems_count: int
    dependencies_count: int
    flows_count: int
    indexed_at: str
    event_id: str


class TopologyAreas(BaseModel):
    target_id: str
    areas: list[dict[str, Any]]
    count: int
    next_cursor: str | None


class TopologySubsystems(BaseModel):
    target_id: str
    subsystems: list[dict[str, Any]]
    count: int
    next_cursor: str | None


class TopologyDependencies(BaseModel):
    target_id: str
    dependencies: list[dict[str, Any]]
    count: int
    next_cursor: str | None


LISTS: dict[str, tuple[str, type[BaseModel]]] = {
    AREA: ("areas", TopologyAreas),
    SUBSYSTEM: ("subsystems", TopologySubsystems),
    DEPENDENCY: ("dependencies", TopologyDependencies),
}


def _target(request: web.Request) -> str:
    target = str_param(request, "target")
    if target is None:
        bad_param("target", "field required")
    return target


def _count(value: Any, fallback: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback


async def topology_summary(request: web.Request) -> web.Response:
    target = _target(request)
    found = await request.app[STORE_KEY].topology_summary(target)
    if found is None:
        not_found("topology of target", target)
    body = dict(found.payload)
    for kind, key in COUNT_KEYS.items():
        body[key] = _count(body.get(key), found.counts.get(kind, 0))
    body.update(
        target_id=target,
        flows_count=_count(body.get("flows_count"), 0),
        indexed_at=found.timestamp,
        event_id=found.event_id,
    )
    return web.json_response(text=TopologySummaryBody.model_validate(body).model_dump_json())


def _list_handler(kind: str) -> Any:
    key, model = LISTS[kind]

    async def handle(request: web.Request) -> web.Response:
        target = _target(request)
        limit = limit_param(request, default=LIMIT[0], maximum=LIMIT[1])
        cursor = str_param(request, "cursor")
        page = await page_of(
            request.app[STORE_KEY].topology_items(target, kind, limit=limit, cursor=cursor)
        )
        body = {
            "target_id": target,
            key: page.items,
            "count": len(page.items),
            "next_cursor": page.next_cursor,
        }
        return web.json_response(text=model.model_validate(body).model_dump_json())

    return handle


def topology_routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/topology/summary", topology_summary),
        web.get("/v1/topology/areas", _list_handler(AREA)),
        web.get("/v1/topology/subsystems", _list_handler(SUBSYSTEM)),
        web.get("/v1/topology/dependencies", _list_handler(DEPENDENCY)),
    ]
