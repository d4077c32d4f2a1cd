"""POST /v1/backlog/suggest: record that an operator asked for backlog proposals.

Pipeline position: like invalidate, an operator's request enters as a one-event bundle
queued through the ingest path's publisher (after its body is validated, 422, and the
queue's backpressure check, 503); the consumer stores the ``backlog.suggest.requested``
event like any other, and a scheduler that reads the event log acts on it. The control
plane itself proposes nothing, so the answer has the original's shape with what is known
now: ``status`` ``accepted``, no attempt, PR or task count yet, and a ``message``.

The bundle id is ``backlog-suggest-{target}``: every request of a target lands in one
partition, in order. The event_id is a random UUID (two requests are two events).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from aiohttp import web

from ingest.deps import WRITE_DEPS_KEY
from ingest.jsonbody import read_model
from storage.schema import MAX_ID_LENGTH, Bundle
from webcore.middlewares import TOKEN_LABEL
from webcore.responses import BacklogSuggestRequest, BacklogSuggestResponse
from webcore.roles import Role, requires

EVENT_TYPE = "backlog.suggest.requested"
ACTOR = "control-plane"


def build_bundle(target: str) -> Bundle:
    now = datetime.now(UTC)
    return Bundle.model_validate(
        {
            "target": target,
            "bundle_id": f"backlog-suggest-{target}"[:MAX_ID_LENGTH],
            "events": [
                {
                    "event_id": str(uuid.uuid4()),
                    "event_type": EVENT_TYPE,
                    "timestamp": now,
                    "actor_id": ACTOR,
                    "payload": {"target_id": target},
                }
            ],
        }
    )


@requires(Role.INGEST)  # it records the caller's own event, as a worker's post does
async def handle_backlog_suggest(request: web.Request) -> web.Response:
    body = await read_model(request, BacklogSuggestRequest, "A non-empty target is required.")
    deps = request.app[WRITE_DEPS_KEY]
    bundle = build_bundle(body.target)
    await deps.publish(bundle, request.get(TOKEN_LABEL) or "backlog-suggest")
    answer = BacklogSuggestResponse(
        status="accepted",
        message=f"Backlog suggestion for {body.target!r} requested; a scheduler acts on the "
        f"{EVENT_TYPE} event.",
        event_id=bundle.events[0].event_id,
        bundle_id=bundle.bundle_id,
    )
    return web.json_response(text=answer.model_dump_json(), status=202)
