"""A scripted stand-in for ``POST /v1/events/ingest`` (standard library HTTP server).

Each request is answered by the first matching rule: a queued scripted answer, else 413
over ``limit_events``, else ``reject`` (by bundle id), else 202. Every request is recorded,
its body decompressed.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Scripted:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


class FakeControlPlane:
    def __init__(self, port: int = 0) -> None:
        self.requests: list[Request] = []
        self.script: deque[Scripted] = deque()
        self.reject: dict[str, Scripted] = {}
        self.limit_events = 1_000_000
        self.delay = 0.0  # seconds before each answer (a ?wait= that takes its time)
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                fake.gate.wait(30)
                time.sleep(fake.delay)
                answer = fake.answer(
                    Request(self.path, dict(self.headers.items()), json.loads(raw))
                )
                data = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def answer(self, request: Request) -> Scripted:
        with self._lock:
            self.requests.append(request)
            if self.script:
                return self.script.popleft()
        if len(request.body.get("events", [])) > self.limit_events:
            return Scripted(413, {"detail": f"more than {self.limit_events} events"})
        refusal = self.reject.get(request.body.get("bundle_id", ""))
        if refusal is not None:
            return refusal
        n = len(request.body.get("events", []))
        return Scripted(202, {"status": "accepted", "bundle_id": request.body["bundle_id"],
                              "ingested": n})  # fmt: skip

    def bundle_ids(self) -> list[str]:
        with self._lock:
            return [r.body["bundle_id"] for r in self.requests]

    def stop(self) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raw_bundle(bundle_id: str, events: int = 2, target: str = "t") -> dict[str, Any]:
    return {
        "target": target,
        "bundle_id": bundle_id,
        "events": [
            {
                "event_id": f"{bundle_id}-e{i}",
                "event_type": "attempt.started",
                "timestamp": "2026-11-28T12:00:00Z",
                "payload": {"attempt_id": bundle_id},
            }
            for i in range(events)
        ],
    }
