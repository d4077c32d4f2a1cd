"""OpenAPI 3.1 document of the whole HTTP API (both tiers), served at GET /openapi.json.

Pipeline position: documentation generated from the same pydantic models the handlers
serialise (:mod:`storage.views`, :mod:`storage.schema`, :mod:`webcore.responses`), so the
shapes are written once; ``tests/ingest/test_openapi.py`` checks the running app against
it with schemathesis. Served without auth (it holds no data) by whichever process serves
the read API: the query tier, or an ingest process with reads on. One document for both
tiers, because behind one URL (or the prod Ingress) they are one API.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from query import topology as topo
from query.autonomy import AutonomyStatus
from query.routes import LIMITS
from storage import views as v
from storage.schema import Bundle, InvalidateRequest
from webcore import responses as r

REF = "#/components/schemas/{model}"
_MODELS: list[type[BaseModel]] = [
    Bundle,
    InvalidateRequest,
    v.GraphSummary,
    v.AttemptDetail,
    v.TaskDetail,
    v.ChainStatus,
    v.EventView,
    r.AttemptList,
    r.AttemptErrorList,
    r.FailureList,
    r.EventPage,
    r.TaskList,
    r.Stats,
    r.Accepted,
    r.InvalidateAccepted,
    r.IngestOk,
    r.ErrorBody,
    r.Health,
    AutonomyStatus,
    r.BacklogSuggestRequest,
    r.BacklogSuggestResponse,
    topo.TopologySummaryBody,
    topo.TopologyAreas,
    topo.TopologySubsystems,
    topo.TopologyDependencies,
]


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "malformed request (for a read: a request line over the server's 8 KiB limit)",
        401: "missing or wrong bearer token",
        404: "unknown id",
        413: "too large",
        415: "unsupported content type or encoding",
        422: "invalid parameter or body (errors[].loc names it)",
        503: "queue or storage unavailable (nothing was queued); see Retry-After",
        504: "written to the queue but unconfirmed: may or may not be queued; a retry is safe",
    }
    return {str(c): _json(_ref(r.ErrorBody), texts[c]) for c in codes}


def _str_q(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", "maxLength": 255},
    }


def _limit(key: str) -> dict[str, Any]:
    default, maximum = LIMITS[key]
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"page size (default {default}, max {maximum})",
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
    }


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _get(summary: str, ok: dict[str, Any], params: list[dict[str, Any]], *codes: int) -> Any:
    return {
        "get": {
            "summary": summary,
            "parameters": params,
            # every read can meet storage that is down (503 with Retry-After), and a request
            # line over aiohttp's 8190 bytes is a 400 before any handler runs: parameters of
            # 255 four-byte characters are over 3 KB each once percent-encoded
            "responses": {"200": _json(ok, summary), **_errors(400, 401, 503, *codes)},
        }
    }


def _topology() -> dict[str, Any]:
    target = {
        "name": "target",
        "in": "query",
        "required": True,
        "description": "the target (repository) id",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    }
    default, maximum = topo.LIMIT
    limit = {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"page size (default {default}, max {maximum})",
        "schema": {"type": "integer", "minimum": 1, "maximum": maximum, "default": default},
    }
    cursor = _str_q("cursor", "next_cursor of the previous page")
    paths = {
        "/v1/topology/summary": _get(
            "newest topo.indexed summary of a target (404 when none)",
            _ref(topo.TopologySummaryBody),
            [target],
            404,
            422,
        )
    }
    for name, model in (
        ("areas", topo.TopologyAreas),
        ("subsystems", topo.TopologySubsystems),
        ("dependencies", topo.TopologyDependencies),
    ):
        paths[f"/v1/topology/{name}"] = _get(
            f"discovered {name} of a target, by id", _ref(model), [target, limit, cursor], 422
        )
    return paths


def _operator() -> dict[str, Any]:
    return {
        "/v1/autonomy/status": _get(
            "autonomy switch from the operators' YAML file", _ref(AutonomyStatus), []
        ),
        "/v1/backlog/suggest": {
            "post": {
                "summary": "record a backlog.suggest.requested event for a scheduler",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(r.BacklogSuggestRequest)}},
                },
                "responses": {
                    "202": _json(_ref(r.BacklogSuggestResponse), "queued"),
                    **_errors(400, 401, 413, 422, 503),
                },
            }
        },
    }


def _ingest() -> dict[str, Any]:
    wait = {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "seconds to wait for the bundle to be stored (max 30; "
        "LEVIATHAN_INGEST_DEFAULT_WAIT_SECONDS applies when absent)",
        "schema": {"type": "number", "minimum": 0, "maximum": 30},
    }
    return {
        "post": {
            "summary": "queue one bundle of worker events",
            "parameters": [wait],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(Bundle)}},
            },
            "responses": {
                "200": _json(_ref(r.IngestOk), "stored (with ?wait=)"),
                "202": _json(_ref(r.Accepted), "queued"),
                **_errors(400, 401, 413, 415, 422, 503, 504),
            },
        }
    }


def _paths(partitions: int) -> dict[str, Any]:
    events_q = [
        _str_q(n, f"only events with this {n}")
        for n in ("task_id", "attempt_id", "event_type", "target")
    ]
    part = {
        "name": "partition",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": partitions - 1},
    }
    verify_ok = {"oneOf": [_ref(v.ChainStatus), {"type": "array", "items": _ref(v.ChainStatus)}]}
    health = {
        "get": {
            "summary": "liveness",
            "security": [],
            "responses": {"200": _json(_ref(r.Health), "alive")},
        }
    }
    return {
        "/healthz": health,
        "/readyz": {
            "get": {
                "summary": "readiness",
                "security": [],
                "responses": {
                    "200": _json(_ref(r.Health), "ready"),
                    "503": _json(_ref(r.Health), "not ready"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/events/ingest": _ingest(),
        "/v1/graph/summary": _get("graph summary", _ref(v.GraphSummary), []),
        "/v1/attempts": _get(
            "attempts, newest first by when the store first saw each (an order writers "
            "cannot change: pages neither skip nor repeat an attempt); next_cursor is null "
            "on the last page; with include=error each carries its failure summary",
            {"anyOf": [_ref(r.AttemptList), _ref(r.AttemptErrorList)]},
            [
                _str_q("target", "filter"),
                _str_q("status", "filter"),
                _limit("attempts"),
                _str_q("cursor", "next_cursor of the previous page"),
                _str_q("include", "'error': each attempt with its failure summary"),
            ],
            422,
        ),
        "/v1/attempts/{attempt_id}": _get(
            "one attempt", _ref(v.AttemptDetail), [_path("attempt_id")], 404
        ),
        "/v1/attempts/{attempt_id}/invalidate": {
            "post": {
                "summary": "queue an attempt.invalidated event",
                "parameters": [_path("attempt_id")],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(InvalidateRequest)}},
                },
                "responses": {
                    "202": _json(_ref(r.InvalidateAccepted), "queued"),
                    **_errors(400, 401, 404, 413, 422, 503),
                },
            }
        },
        "/v1/failures": _get(
            "attempt.failed and task.failed events, newest stored first (keyset on the "
            "event's insertion number); next_cursor is null on the last page",
            _ref(r.FailureList),
            [
                _str_q("target", "filter"),
                _limit("failures"),
                _str_q("cursor", "next_cursor of the previous page"),
            ],
            422,
        ),
        "/v1/events/recent": _get(
            "stored events, newest first",
            {"type": "array", "items": _ref(v.EventView)},
            [_limit("recent")],
            422,
        ),
        "/v1/events": _get(
            "event log export/sync in commit order: a client paging at any moment during "
            "any load sees every stored event (and revision) exactly once; each partition's "
            "events in chain order, partitions merged by insertion. next_cursor is never "
            "null: after the page's last event (the last page too, so a caught-up client "
            "polls from where it stopped), or the given cursor on an empty page; the end "
            "of the log is an empty (or short) page. Cursors are opaque; older ones keep "
            "working, foreign ones are a 422",
            _ref(r.EventPage),
            [_str_q("after", "next_cursor of the previous page"), _limit("events"), *events_q],
            422,
        ),
        "/v1/events/verify": _get("verify hash chains", verify_ok, [part], 422),
        "/v1/tasks": _get(
            "tasks, newest first by when the store first saw each; next_cursor is null on "
            "the last page",
            _ref(r.TaskList),
            [
                _str_q("target", "filter"),
                _str_q("status", "filter"),
                _limit("tasks"),
                _str_q("cursor", "next_cursor of the previous page"),
            ],
            422,
        ),
        "/v1/tasks/{task_id}": _get("one task", _ref(v.TaskDetail), [_path("task_id")], 404),
        "/v1/stats": _get("queue figures per partition", _ref(r.Stats), [], 503),
        **_topology(),
        **_operator(),
        "/openapi.json": {
            "get": {
                "summary": "this document",
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
            }
        },
    }


def build_document(partitions: int) -> dict[str, Any]:
    _, defs = models_json_schema([(m, "serialization") for m in _MODELS], ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Leviathan control plane", "version": "1.0.0"},
        "paths": _paths(partitions),
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def openapi_routes(partitions: int) -> list[web.RouteDef]:
    document = build_document(partitions)

    async def handle(_: web.Request) -> web.Response:
        return web.json_response(document)

    return [web.get("/openapi.json", handle)]
