"""Query-parameter parsing for the read endpoints (README, "The contract").

Pipeline position: between aiohttp's raw query string and the storage read interface.
Every bad value becomes a 422 whose ``errors[].loc`` is ``["query", <name>]`` and every
unknown id a 404 with ``detail``, raised as :mod:`webcore.errors` exceptions that the
app's error middleware renders as ``{"detail", "errors"}``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import NoReturn, TypeVar

from aiohttp import web

from storage.readside import InvalidCursor
from storage.views import Page
from webcore.errors import IngestError, Unprocessable

T = TypeVar("T")

MAX_FILTER_LENGTH = 255


class NotFound(IngestError):
    status = 404
    reason = "not_found"


def bad_param(name: str, msg: str) -> NoReturn:
    """422 naming the query parameter ``name``."""
    raise Unprocessable(
        f"Query parameter {name!r} is invalid: {msg}.",
        errors=[{"loc": ["query", name], "msg": msg}],
    )


def not_found(kind: str, ident: str) -> NoReturn:
    raise NotFound(f"{kind.capitalize()} {ident!r} not found.")


def int_param(request: web.Request, name: str, *, default: int | None, lo: int, hi: int) -> int:
    """An integer in ``[lo, hi]``; ``default`` when absent (``None`` makes it required)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        if default is None:
            bad_param(name, "field required")
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        bad_param(name, "must be an integer")
    if not lo <= value <= hi:
        bad_param(name, f"must be between {lo} and {hi}")
    return value


def limit_param(request: web.Request, *, default: int, maximum: int) -> int:
    return int_param(request, "limit", default=default, lo=1, hi=maximum)


def str_param(request: web.Request, name: str) -> str | None:
    """An optional filter string; empty means absent, over-long is rejected."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        bad_param(name, "given more than once")
    if not values or values[0] == "":
        return None
    if len(values[0]) > MAX_FILTER_LENGTH:
        bad_param(name, f"at most {MAX_FILTER_LENGTH} characters")
    return values[0]


async def page_of(listing: Awaitable[Page[T]], param: str = "cursor") -> Page[T]:
    """A store listing; a cursor the store cannot read is a 422 naming ``param``."""
    try:
        return await listing
    except InvalidCursor as exc:
        bad_param(param, str(exc))
