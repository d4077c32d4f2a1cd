"""One HTTP/1.1 keep-alive connection to ``POST /v1/events/ingest`` (standard library).

Pipeline position: the bottom of the client. :class:`Transport` posts one encoded body and
returns the server's :class:`Answer`; it never retries on its own except once, at once, when
a kept-alive connection turns out to have been closed by the server while idle (the request
never reached it). Connection errors and timeouts propagate as ``OSError`` /
``http.client.HTTPException`` for :mod:`leviathan_client.retry` to classify.

Not thread-safe: each thread that posts owns its own Transport.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

INGEST_PATH = "/v1/events/ingest"
USER_AGENT = "leviathan-client/0.1"


@dataclass(frozen=True)
class Answer:
    """What the control plane answered: status, parsed JSON body, ``Retry-After`` seconds."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """503, 429, 408 and every other 5xx: the server may take it later."""
        return self.status in (408, 429) or self.status >= 500

    @property
    def detail(self) -> str:
        return str(self.body.get("detail", ""))

    @property
    def errors(self) -> list[Any]:
        errors = self.body.get("errors")
        return errors if isinstance(errors, list) else []


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Transport:
    """Posts bodies over one reused connection to the ingest URL."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/") + INGEST_PATH
        self._timeout = timeout
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def post(self, data: bytes, gzipped: bool, wait: float | None = None) -> Answer:
        """POST one body; raises ``OSError``/``HTTPException`` when no answer came."""
        path = self._path if wait is None else f"{self._path}?{urlencode({'wait': f'{wait:g}'})}"
        headers = dict(self._headers)
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        # ?wait= holds the answer back up to that long: the socket must wait longer
        timeout = self._timeout if wait is None else max(self._timeout, wait + 10.0)
        reused = self._conn is not None
        try:
            return self._request(path, data, headers, timeout)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                raise
        # the server closed the idle connection before our request: once more on a new one
        return self._request(path, data, headers, timeout)

    def _request(self, path: str, data: bytes, headers: dict[str, str], timeout: float) -> Answer:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        try:
            if conn.sock is None:
                conn.connect()
            conn.sock.settimeout(timeout)
            conn.request("POST", path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (TimeoutError, OSError, http.client.HTTPException):
            self.close()
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"detail": raw[:500].decode(errors="replace")}
        return Answer(
            status=resp.status,
            body=body if isinstance(body, dict) else {"answer": body},
            retry_after=parse_retry_after(resp.getheader("Retry-After")),
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
