"""POST /v1/attempts/{id}/invalidate: queue an ``attempt.invalidated`` event.

Pipeline position: an operator's request enters the ingest tier like a worker's bundle;
its body is validated first (422), then the attempt is looked up (404 when unknown),
turned into a one-event Bundle with ``bundle_id`` ``bundle-{attempt_id}`` (the workers'
convention, so it lands in the attempt's partition after its other events) and queued
through the same publisher as ``POST /v1/events/ingest`` (backpressure included: 503 over
the high-water mark); the envelope records the caller's token label, and the route needs
the ``admin`` role. The consumer stores and projects it like any event.

The event_id is a random UUID: the event carries the request time, so a deterministic id
would turn a client's retry into a revision of one event (same id, different content)
rather than a second event; two invalidations of one attempt are harmless in the
projection.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ingest.deps import WRITE_DEPS_KEY
from ingest.jsonbody import read_model
from storage.schema import Bundle, InvalidateRequest
from storage.views import AttemptDetail
from webcore.middlewares import TOKEN_LABEL
from webcore.params import not_found
from webcore.responses import InvalidateAccepted
from webcore.roles import Role, requires
from webcore.store_ctx import STORE_KEY


def _target_of(detail: AttemptDetail) -> str:
    props = detail.attempt_node.properties
    for key in ("target", "target_id"):
        if isinstance(props.get(key), str) and props[key]:
            return str(props[key])
    return detail.events[0].target if detail.events else "unknown"


def build_bundle(attempt_id: str, reason: str, detail: AttemptDetail) -> Bundle:
    task_id = detail.attempt_node.properties.get("task_id")
    payload: dict[str, Any] = {"attempt_id": attempt_id, "reason": reason}
    if isinstance(task_id, str):
        payload["task_id"] = task_id
    return Bundle.model_validate(
        {
            "target": _target_of(detail),
            "bundle_id": f"bundle-{attempt_id}",
            "events": [
                {
                    "event_id": str(uuid.uuid4()),
                    "event_type": "attempt.invalidated",
                    "timestamp": datetime.now(UTC),
                    "actor_id": "control-plane",
                    "payload": payload,
                }
            ],
        }
    )


@requires(Role.ADMIN)
async def handle_invalidate(request: web.Request) -> web.Response:
    attempt_id = request.match_info["attempt_id"]
    store = request.app[STORE_KEY]
    # 422 before 404, as FastAPI clients expect
    body = await read_model(request, InvalidateRequest, "A non-empty reason is required.")
    if not await store.attempt_exists(attempt_id):
        not_found("attempt", attempt_id)
    detail = await store.get_attempt(attempt_id)
    if detail is None:
        not_found("attempt", attempt_id)
    bundle = build_bundle(attempt_id, body.reason, detail)
    await request.app[WRITE_DEPS_KEY].publish(bundle, request[TOKEN_LABEL])
    answer = InvalidateAccepted(
        status="accepted",
        bundle_id=bundle.bundle_id,
        ingested=1,
        attempt_id=attempt_id,
        event_id=bundle.events[0].event_id,
    )
    return web.json_response(text=answer.model_dump_json(), status=202)
