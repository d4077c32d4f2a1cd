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
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, StringConstraints

from ingest.deps import DEPS_KEY
from ingest.jsonbody import read_model
from ingest.middlewares import TOKEN_LABEL
from ingest.roles import Role, requires
from storage.schema import MAX_ID_LENGTH, Bundle

EVENT_TYPE = "backlog.suggest.requested"
ACTOR = "control-plane"


class BacklogSuggestRequest(BaseModel):
    """Body of ``POST /v1/backlog/suggest``; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore")

    target: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, strip_whitespace=True)
    ]


class BacklogSuggestResponse(BaseModel):
    """The original's response; ``event_id``/``bundle_id`` say what was queued."""

    status: Literal["accepted"]
    attempt_id: str | None = None
    pr_url: str | None = None
    tasks_proposed: int | None = None
    message: str
    event_id: str
    bundle_id: str


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
    deps = request.app[DEPS_KEY]
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
