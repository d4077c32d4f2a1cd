"""Small JSON request bodies of the operator endpoints, validated into a pydantic model.

Pipeline position: ``POST /v1/attempts/{id}/invalidate`` and ``POST /v1/backlog/suggest``
(and any later operator POST) read their body here before touching storage or the queue,
so a bad body is a 400/408/413/422 naming the problem and nothing is queued. Worker
bundles take the streaming path of :mod:`ingest.body` instead.
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from webcore.errors import BadRequest, PayloadTooLarge, RequestTimeout, Unprocessable

MAX_BODY = 64 * 1024
BODY_TIMEOUT = 30
M = TypeVar("M", bound=BaseModel)


async def read_model(request: web.Request, model: type[M], detail: str) -> M:
    """The body as ``model``; ``detail`` is the 422's sentence, ``errors`` name each field."""
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            raw = await request.content.read(MAX_BODY + 1)
    except TimeoutError:
        raise RequestTimeout(f"The request body did not arrive within {BODY_TIMEOUT} s.") from None
    if len(raw) > MAX_BODY:
        raise PayloadTooLarge(f"The request body exceeds {MAX_BODY} bytes.")
    try:
        data = orjson.loads(raw or b"null")
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON.") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"loc": ["body", *err["loc"]], "msg": err["msg"]}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise Unprocessable(detail, errors=errors) from None
