"""One POST of one bundle to Spider, and what its answer means for the entry.

Pipeline position: used by consumer.forwarder, which owns the retry loop and the acks.
The forwarder has its own aiohttp session (never the consumer's or ingest's), with the
timeout of ``LEVIATHAN_SPIDER_TIMEOUT_SECONDS`` over the whole exchange. Answers are sorted
into three kinds: ``ok`` (2xx: ack), ``refused`` (a 4xx about this bundle: dead-letter it
with the answer) and ``retry`` (no connection, a timeout, 5xx, 429, and the 4xx that say
something about Spider or our configuration rather than the bundle: a wrong token or path
would otherwise dead-letter every bundle).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import aiohttp

from consumer.forwarder.settings import SpiderSettings

logger = logging.getLogger(__name__)

# 401/403: token; 404: URL path; 408/425/429: Spider asks us to come back later.
RETRYABLE_4XX = frozenset({401, 403, 404, 408, 425, 429})
BODY_KEPT = 1000
"""Bytes of a refusing answer kept on the dead entry."""
OK_BODY_READ = 65536
"""A 2xx body is read (so the connection is reused) up to this much, then dropped."""
ENTRY_HEADER = "X-Leviathan-Entry"
"""``{partition}:{stream id}``: equal on every re-delivery of one entry, so Spider can dedup."""

Kind = Literal["ok", "refused", "retry"]


@dataclass(frozen=True, slots=True)
class Answer:
    """What one POST came to."""

    kind: Kind
    reason: str
    """Metric label: ``2xx``, ``4xx``, ``5xx``, ``429``, ``timeout``, ``connection``, …"""
    status: int | None = None
    body: bytes = b""

    def describe(self) -> str:
        if self.status is None:
            return self.reason + (f" ({self.body.decode(errors='replace')})" if self.body else "")
        text = self.body[:200].decode("utf-8", errors="replace").replace("\n", " ")
        return f"HTTP {self.status}" + (f": {text}" if text else "")


def classify(status: int, body: bytes) -> Answer:
    if 200 <= status < 300:
        return Answer("ok", "2xx", status)
    if 400 <= status < 500 and status not in RETRYABLE_4XX:
        return Answer("refused", "4xx", status, body)
    reason = str(status) if status in RETRYABLE_4XX else f"{status // 100}xx"
    return Answer("retry", reason, status, body)


async def _read_some(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The first ``limit`` bytes of the body (a stream read may return less per call)."""
    buf = bytearray()
    while len(buf) < limit:
        chunk = await response.content.read(limit - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


class SpiderClient:
    """The forwarder's HTTP session; open it before use, close it at shutdown."""

    def __init__(self, settings: SpiderSettings) -> None:
        self.url = settings.spider_ingest_url
        self.timeout = aiohttp.ClientTimeout(total=settings.spider_timeout_s)
        self.headers = {"Content-Type": "application/json"}
        if settings.spider_token is not None:
            self.headers["Authorization"] = f"Bearer {settings.spider_token.get_secret_value()}"
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, body: bytes, entry: str) -> Answer:
        """POST one bundle's JSON; never raises for a network or HTTP failure."""
        assert self._session is not None, "SpiderClient.open() first"
        try:
            async with self._session.post(
                self.url, data=body, headers={ENTRY_HEADER: entry}, allow_redirects=False
            ) as response:
                ok = 200 <= response.status < 300
                text = await _read_some(response, OK_BODY_READ if ok else BODY_KEPT)
                return classify(response.status, text)
        except TimeoutError:  # aiohttp's own timeout errors subclass it too
            return Answer("retry", "timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return Answer("retry", "connection", body=str(exc)[:BODY_KEPT].encode())
