"""Client-facing error tree of the ingest tier (README, "The contract").

Pipeline position: body parsing, auth, the publisher and backpressure raise these; the
error middleware (:mod:`webcore.middlewares`) turns each into ``{"detail", "errors"}`` JSON
with its status code, so no client input ever becomes a 500::

    IngestError (status, detail, errors, headers)
    ├── BadRequest            400  malformed JSON, invalid UTF-8, corrupt gzip
    ├── Unauthorized          401  missing/wrong token (WWW-Authenticate: Bearer)
    ├── PayloadTooLarge       413  raw or decompressed body, event count
    ├── UnsupportedMedia      415  content type or content encoding
    ├── Unprocessable         422  schema violations, bad ?wait=
    └── Unavailable           503  Redis down/slow, publisher stopped, lag over high water:
        │                          the bundle is not queued
        └── Unconfirmed       504  written to Redis, no reply within the reply wait: the
                                   bundle may or may not be queued (a retry is safe)
"""

from __future__ import annotations

from typing import Any


class IngestError(Exception):
    """A request rejected with ``status``; ``reason`` labels the rejection metric."""

    status = 500
    reason = "error"

    def __init__(
        self,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}
        if reason is not None:
            self.reason = reason


class BadRequest(IngestError):
    status = 400
    reason = "bad_request"


class Unauthorized(IngestError):
    status = 401
    reason = "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(IngestError):
    """A valid token without the role the route requires (``webcore.roles``)."""

    status = 403
    reason = "forbidden"


class RequestTimeout(IngestError):
    """The body did not arrive in time; the connection is closed, its rest unread."""

    status = 408
    reason = "body_timeout"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Connection": "close"})


class PayloadTooLarge(IngestError):
    status = 413
    reason = "too_large"


class UnsupportedMedia(IngestError):
    status = 415
    reason = "unsupported_media"


class Unprocessable(IngestError):
    status = 422
    reason = "invalid"


class Unavailable(IngestError):
    status = 503
    reason = "unavailable"

    def __init__(self, detail: str, retry_after: int, reason: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, reason=reason)


class Unconfirmed(Unavailable):
    """The XADD was written to Redis but neither confirmed nor refused in time.

    Not a 503: a 503 promises that nothing was queued. The bundle may be in the stream; a
    retry is safe because storage keeps each ``event_id`` once.
    """

    status = 504
    reason = "unconfirmed"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, retry_after, reason="unconfirmed")
