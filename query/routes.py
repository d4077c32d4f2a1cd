"""Route table of the ingest tier's read endpoints (README "HTTP API").

Pipeline position: the read side. Handlers parse and bound query parameters
(:mod:`webcore.params`), call the storage read interface of the store opened by
:mod:`webcore.store_ctx`, and serialise the :mod:`storage.views` models unchanged, so both
backends answer identically. All state comes from storage: a restarted app over the same
storage gives the same answers.

Limits (default / maximum), the defaults as the original's clients expect: attempts
10/1000, failures 10/1000, events/recent 200/1000, events 100/1000, tasks 100/1000,
topology lists 1000/5000; the graph summary always carries the last 20 events. Operator
routes (autonomy status, topology) live in their own modules; the operator writes (invalidate,
backlog suggest) are the ingest tier's.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from query.autonomy import handle_autonomy_status
from query.chaincheck import PREFIXES_KEY
from query.deps import DEPS_KEY
from query.stats import handle_stats
from query.topology import topology_routes
from storage.views import ChainStatus, EventView
from webcore.fastjson import dumps, dumps_list
from webcore.params import bad_param, int_param, limit_param, not_found, page_of, str_param
from webcore.responses import (
    AttemptErrorList,
    AttemptList,
    AttemptWithError,
    EventPage,
    FailureList,
    TaskList,
)
from webcore.store_ctx import STORE_KEY

LIMITS = {
    "attempts": (10, 1000),
    "failures": (10, 1000),
    "recent": (200, 1000),
    "events": (100, 1000),
    "tasks": (100, 1000),
}
SUMMARY_RECENT = 20


EVENT_LIST = TypeAdapter(list[EventView])
CHAIN_LIST = TypeAdapter(list[ChainStatus])


def _json_bytes(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def _model(body: BaseModel) -> web.Response:
    return _json_bytes(dumps(body))


async def graph_summary(request: web.Request) -> web.Response:
    summary = await request.app[STORE_KEY].graph_summary(SUMMARY_RECENT)
    return _model(summary)


async def list_attempts(request: web.Request) -> web.Response:
    default, maximum = LIMITS["attempts"]
    limit = limit_param(request, default=default, maximum=maximum)
    target, status = str_param(request, "target"), str_param(request, "status")
    cursor, include = str_param(request, "cursor"), str_param(request, "include")
    if include not in (None, "error"):
        bad_param("include", "the only value is 'error' (each attempt's failure summary)")
    page = await page_of(
        request.app[STORE_KEY].list_attempts(
            target=target, status=status, limit=limit, cursor=cursor
        )
    )
    if include == "error":
        items = [AttemptWithError(**a.__dict__) for a in page.items]  # error included
        full = AttemptErrorList(attempts=items, count=len(items), next_cursor=page.next_cursor)
        return _model(full)
    body = AttemptList(attempts=page.items, count=len(page.items), next_cursor=page.next_cursor)
    return _model(body)


async def get_attempt(request: web.Request) -> web.Response:
    attempt_id = request.match_info["attempt_id"]
    detail = await request.app[STORE_KEY].get_attempt(attempt_id)
    if detail is None:
        not_found("attempt", attempt_id)
    return _model(detail)


async def list_failures(request: web.Request) -> web.Response:
    default, maximum = LIMITS["failures"]
    limit = limit_param(request, default=default, maximum=maximum)
    page = await page_of(
        request.app[STORE_KEY].list_failures(
            target=str_param(request, "target"), limit=limit, cursor=str_param(request, "cursor")
        )
    )
    body = FailureList(failures=page.items, count=len(page.items), next_cursor=page.next_cursor)
    return _model(body)


async def recent_events(request: web.Request) -> web.Response:
    default, maximum = LIMITS["recent"]
    limit = limit_param(request, default=default, maximum=maximum)
    events = await request.app[STORE_KEY].recent_events(limit)
    # the events as /v1/events writes them
    return _json_bytes(dumps_list(events, EVENT_LIST))


async def list_events(request: web.Request) -> web.Response:
    default, maximum = LIMITS["events"]
    limit = limit_param(request, default=default, maximum=maximum)
    filters = {n: str_param(request, n) for n in ("task_id", "attempt_id", "event_type", "target")}
    after = str_param(request, "after")
    page = await page_of(
        request.app[STORE_KEY].list_events(after=after, limit=limit, **filters), "after"
    )
    # never null: at the end of the log, where it stands (a caught-up client polls on)
    cursor = page.next_cursor or page.position
    return _model(EventPage(events=page.items, next_cursor=cursor))


async def list_tasks(request: web.Request) -> web.Response:
    default, maximum = LIMITS["tasks"]
    limit = limit_param(request, default=default, maximum=maximum)
    target, status = str_param(request, "target"), str_param(request, "status")
    page = await page_of(
        request.app[STORE_KEY].list_tasks(
            target=target, status=status, limit=limit, cursor=str_param(request, "cursor")
        )
    )
    body = TaskList(tasks=page.items, count=len(page.items), next_cursor=page.next_cursor)
    return _model(body)


async def get_task(request: web.Request) -> web.Response:
    task_id = request.match_info["task_id"]
    detail = await request.app[STORE_KEY].get_task(task_id)
    if detail is None:
        not_found("task", task_id)
    return _model(detail)


async def verify_chain(request: web.Request) -> web.Response:
    """One partition's ChainStatus, or (without ``partition``) a list for every partition.

    Incremental: each partition's check resumes where the last good one ended
    (:mod:`query.chaincheck`)."""
    store, prefixes = request.app[STORE_KEY], request.app[PREFIXES_KEY]
    if request.query.get("partition", "") == "":
        statuses = [await prefixes.check(store, p) for p in await store.partitions()]
        return _json_bytes(dumps_list(statuses, CHAIN_LIST))
    partitions = request.app[DEPS_KEY].layout.partitions
    partition = int_param(request, "partition", default=None, lo=0, hi=partitions - 1)
    return _model(await prefixes.check(store, partition))


def query_routes() -> list[web.RouteDef]:
    """The read endpoints; all behind the app's bearer-token middleware."""
    return [
        web.get("/v1/graph/summary", graph_summary),
        web.get("/v1/attempts", list_attempts),
        web.get("/v1/attempts/{attempt_id}", get_attempt),
        web.get("/v1/failures", list_failures),
        web.get("/v1/events/recent", recent_events),
        web.get("/v1/events/verify", verify_chain),
        web.get("/v1/events", list_events),
        web.get("/v1/tasks", list_tasks),
        web.get("/v1/tasks/{task_id}", get_task),
        web.get("/v1/stats", handle_stats),
        web.get("/v1/autonomy/status", handle_autonomy_status),
        *topology_routes(),
    ]
