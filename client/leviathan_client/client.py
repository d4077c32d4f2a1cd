"""``Client``: queue bundles, post them from a background thread, retry, spool to disk.

Pipeline position: the worker's side of ``POST /v1/events/ingest``. ``send`` encodes the
bundle (splitting it when it is over the server's limits, :mod:`leviathan_client.encode`),
writes it to the spool when there is one (:mod:`leviathan_client.spool`) and queues it; one
sender thread posts the queue in order over a kept-alive connection, retrying as
:mod:`leviathan_client.retry` decides, until each bundle is answered 2xx or refused for good.

The in-memory bound: without a spool, at most ``max_queue`` bundles wait in memory and
``send`` blocks while the queue is full. With a spool, the bodies past ``max_queue`` are
kept on disk only (re-read when their turn comes), so ``send`` does not block; the bound is
then ``max_spool_bytes`` and a bundle past it raises :class:`SpoolFull`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from leviathan_client.encode import (
    GZIP_THRESHOLD,
    MAX_BODY_BYTES,
    MAX_EVENTS,
    BundleLike,
    as_mapping,
    compress,
    split,
)
from leviathan_client.errors import BundleTooLarge, ClientClosed, Unavailable
from leviathan_client.retry import TRANSIENT, Backoff, Verdict, verdict
from leviathan_client.spool import Spool
from leviathan_client.transport import Answer, Transport

log = logging.getLogger("leviathan_client")

DEFAULT_MAX_QUEUE = 1000
DEFAULT_MAX_SPOOL_BYTES = 1024**3


@dataclass
class Stats:
    """Counters of one client (read them after ``flush``; updated by the sender thread)."""

    queued: int = 0
    delivered: int = 0
    rejected: int = 0
    retries: int = 0


@dataclass
class _Item:
    body: bytes | None  # None: on disk only, read when its turn comes
    path: Path | None
    size: int

    def load(self) -> bytes:
        if self.body is not None:
            return self.body
        assert self.path is not None
        return self.path.read_bytes()


class Client:
    """Sends event bundles to a control plane; see the module docstring for the bounds."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        spool_dir: str | Path | None = None,
        gzip: bool = True,
        timeout: float = 30.0,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_spool_bytes: int = DEFAULT_MAX_SPOOL_BYTES,
        gzip_threshold: int = GZIP_THRESHOLD,
        max_events: int = MAX_EVENTS,
        max_body_bytes: int = MAX_BODY_BYTES,
        backoff: Backoff | None = None,
        adopt_interval: float = 30.0,
    ) -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        self._url, self._token, self._timeout = url, token, timeout
        Transport(url, token, timeout)  # checks the URL now, not in the thread
        self._gzip, self._gzip_threshold = gzip, gzip_threshold
        self._limits = (max_events, max_body_bytes)
        self._max_queue = max_queue
        self._backoff = backoff or Backoff()
        self._adopt_interval = adopt_interval
        self.stats = Stats()
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._in_memory = 0
        self._enqueued = 0
        self._finished = 0
        self._closed = False
        self._abort = threading.Event()
        self._post_lock = threading.Lock()
        self._post_transport: Transport | None = None
        self.spool: Spool | None = None
        if spool_dir is not None:
            self.spool = Spool(Path(spool_dir), max_spool_bytes)
            self._adopt()
        self._thread = threading.Thread(target=self._run, name="leviathan-client", daemon=True)
        self._thread.start()

    # -- the caller's side ------------------------------------------------------------------

    def send(self, bundle: BundleLike) -> None:
        """Queue a bundle (spooled and fsync'd first when there is a spool); returns at once
        unless the in-memory queue is full and there is no spool."""
        if self._closed:
            raise ClientClosed("send() after close()")
        bodies = split(as_mapping(bundle), *self._limits)
        paths: list[Path | None] = [None] * len(bodies)
        if self.spool is not None:
            paths = list(self.spool.put(bodies))
        with self._cond:
            for body, path in zip(bodies, paths, strict=True):
                if path is None:
                    while self._in_memory >= self._max_queue and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        raise ClientClosed("closed while send() waited for room")
                keep = path is None or self._in_memory < self._max_queue
                self._in_memory += keep
                self._queue.append(_Item(body if keep else None, path, len(body)))
                self._enqueued += 1
                self.stats.queued += 1
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every bundle sent so far was answered 2xx or refused for good."""
        with self._cond:
            goal = self._enqueued
            return self._cond.wait_for(lambda: self._finished >= goal, timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush within ``timeout``, then stop the sender; what is left stays in the spool
        (without a spool it is lost, and logged). True when nothing was left."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        done = self.flush(timeout)
        self._abort.set()
        with self._cond:
            self._cond.notify_all()
            left = self._enqueued - self._finished
        self._thread.join(min(self._timeout, 5.0) if not done else None)
        if left:
            where = f"kept in {self.spool.root}" if self.spool else "LOST (no spool_dir)"
            log.warning("closing with %d bundles not delivered: %s", left, where)
        if self.spool is not None:
            self.spool.close()
        with self._post_lock:
            if self._post_transport is not None:
                self._post_transport.close()
        return left == 0

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def post(self, bundle: BundleLike, wait: float | None = None, deadline: float = 60.0) -> Answer:
        """Post one bundle now, from the calling thread (``?wait=`` when given) and return
        the answer: a 2xx, or a permanent 4xx. Retryable answers are retried as the sender
        does for up to ``deadline`` seconds, then :class:`Unavailable` is raised."""
        bodies = split(as_mapping(bundle), *self._limits)
        if len(bodies) > 1:
            raise BundleTooLarge("the bundle is over the server's limits: send() splits it")
        data, gzipped = compress(bodies[0], self._gzip, self._gzip_threshold)
        end = time.monotonic() + deadline
        attempt = 0
        while True:
            with self._post_lock:
                if self._post_transport is None:
                    self._post_transport = Transport(self._url, self._token, self._timeout)
                outcome: Answer | BaseException
                try:
                    outcome = self._post_transport.post(data, gzipped, wait)
                except TRANSIENT as exc:
                    outcome = exc
            if verdict(outcome) is not Verdict.RETRY:
                assert isinstance(outcome, Answer)
                return outcome
            delay = self._backoff.delay(attempt, outcome)
            if time.monotonic() + delay > end:
                raise Unavailable(f"no answer but retryable ones within {deadline} s", outcome)
            time.sleep(delay)
            attempt += 1

    # -- the sender thread ------------------------------------------------------------------

    def _adopt(self) -> None:
        """Queue the files of spool folders whose owner is gone (behind what is queued)."""
        assert self.spool is not None
        items = []
        for path in self.spool.adopt():
            try:
                items.append(_Item(None, path, path.stat().st_size))
            except FileNotFoundError:
                continue
        if items:
            log.info("spool %s: %d unsent bundles adopted", self.spool.root, len(items))
            with self._cond:
                self._queue.extend(items)
                self._enqueued += len(items)
                self._cond.notify_all()

    def _next(self) -> _Item | None:
        """The head of the queue once there is one; None when closing with nothing left."""
        while True:
            with self._cond:
                if not self._queue and not self._abort.is_set():
                    self._cond.wait(self._adopt_interval)
                if self._queue:
                    return self._queue[0]
                if self._abort.is_set():
                    return None
            if self.spool is not None:
                self._adopt()  # idle: a process that shared the folder may have died

    def _run(self) -> None:
        transport = Transport(self._url, self._token, self._timeout)
        try:
            while True:
                item = self._next()
                if item is None:
                    return
                if not self._deliver(item, transport):
                    return  # aborted by close(): the item stays in the spool
                with self._cond:
                    self._queue.popleft()
                    self._in_memory -= item.body is not None
                    self._finished += 1
                    self._cond.notify_all()
        finally:
            transport.close()

    def _deliver(self, item: _Item, transport: Transport) -> bool:
        """Post one item until it is acknowledged or refused; False when aborted (the item
        then stays queued and spooled)."""
        try:
            body = item.load()
        except FileNotFoundError:
            return True  # another process flushed the folder it was adopted from
        name = item.path.name if item.path is not None else "memory.json"
        if not self._post_body(body, name, transport):
            return False
        if self.spool is not None and item.path is not None:
            self.spool.done(item.path, item.size)
        return True

    def _post_body(self, body: bytes, name: str, transport: Transport) -> bool:
        """Post one body until answered 2xx or refused for good; False when aborted.

        A 413 means the server's limits are below this client's (an operator lowered
        ``LEVIATHAN_MAX_BODY_BYTES`` or ``LEVIATHAN_MAX_EVENTS``): the bundle is posted
        again as two halves with derived ids, which is not a retry of the refused request.
        """
        data, gzipped = compress(body, self._gzip, self._gzip_threshold)
        attempt = 0
        while not self._abort.is_set():
            outcome: Answer | BaseException
            try:
                outcome = transport.post(data, gzipped)
            except TRANSIENT as exc:
                outcome = exc
            kind = verdict(outcome)
            if kind is Verdict.DONE:
                self.stats.delivered += 1
                return True
            if kind is Verdict.REJECTED:
                assert isinstance(outcome, Answer)
                halves = _halves(body) if outcome.status == 413 else []
                if not halves:
                    self._rejected(name, body, outcome)
                    return True
                log.warning("413 (%s): posting the bundle as two halves", outcome.detail)
                return all(
                    self._post_body(half, f"{name.removesuffix('.json')}-{i}.json", transport)
                    for i, half in enumerate(halves)
                )
            delay = self._backoff.delay(attempt, outcome)
            log.info("post failed (%s); retrying in %.2f s", _describe(outcome), delay)
            self.stats.retries += 1
            attempt += 1
            if self._abort.wait(delay):
                return False
        return False

    def _rejected(self, name: str, body: bytes, answer: Answer) -> None:
        self.stats.rejected += 1
        kept = ""
        if self.spool is not None:
            record = {"status": answer.status, "answer": answer.body}
            kept = f"; kept in {self.spool.reject(name, body, record)}"
        log.error(
            "bundle refused for good (%d): %s %s%s",
            answer.status,
            answer.detail,
            answer.errors,
            kept,
        )


def _halves(body: bytes) -> list[bytes]:
    """The bundle as two bundles of half its events each, or [] for a one-event bundle."""
    raw = json.loads(body)
    events = raw.get("events") if isinstance(raw, dict) else None
    if not isinstance(events, list) or len(events) < 2:
        return []
    return split(raw, max_events=(len(events) + 1) // 2)


def _describe(outcome: Answer | BaseException) -> str:
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {outcome}"
    return f"{outcome.status} {outcome.detail}".strip()
