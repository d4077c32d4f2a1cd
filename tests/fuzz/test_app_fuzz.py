"""Hostile requests against the real ``python -m ingest`` process.

Starts its own redis-server (free port, temp dir) and the ingest process on NDJSON, then
throws hypothesis-generated requests at it over raw HTTP: zero 5xx, nothing queued for any
rejected request (every case is rejected by construction), a trickling client is cut off by
the server instead of holding a handler forever, and the token never shows up in the
process log or in /metrics.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast
from urllib.parse import quote

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from leviathan_cp.ports import free_port
from tests.fuzz.conftest import FUZZ

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN = "fuzz-Secret-Token-9f8e7d6c5b4a"


class Ingest:
    def __init__(self, tmp: Path) -> None:
        self.redis_port, self.port = free_port(), free_port()
        self.log = tmp / "ingest.log"
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(tmp),
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        env = {
            **os.environ,
            "LEVIATHAN_CONTROL_PLANE_TOKEN": TOKEN,
            "LEVIATHAN_CONTROL_PLANE_BACKEND": "ndjson",
            "LEVIATHAN_NDJSON_DIR": str(tmp / "d"),
            "LEVIATHAN_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "LEVIATHAN_API_HOST": "127.0.0.1",
            "LEVIATHAN_API_PORT": str(self.port),
            "LEVIATHAN_BODY_TIMEOUT_SECONDS": "2",
        }
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "leviathan_cp", "ingest"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while self.request("GET", "/readyz")[0] != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                pytest.fail(f"ingest did not start: {self.log.read_text()[-800:]}")
            time.sleep(0.2)

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def queued(self) -> int:
        client = redis.Redis(port=self.redis_port)
        try:
            total = 0
            for key in client.scan_iter(_type="stream"):
                total += cast(int, client.xlen(key))
            return total
        finally:
            client.close()

    def close(self) -> None:
        for proc in (self.proc, self.redis):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    server = Ingest(tmp_path_factory.mktemp("ingest"))
    yield server
    server.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}
bad_bodies = st.one_of(
    st.binary(max_size=300).filter(lambda b: not b.strip().startswith(b"{")),
    st.just(b'{"target": 1, "bundle_id": [], "events": {}}'),
    st.just(b'{"target":"t","bundle_id":"b","events":[{"event_id":"' + b"x" * 5000 + b'"}]}'),
    st.just(b'{"target":"t","bundle_id":"\xff\xfe","events":[]}'),
    st.just(b"[" * 50_000 + b"]" * 50_000),
)
headers = st.one_of(
    st.just({**AUTH, "Content-Type": "application/json"}),
    st.just({**AUTH, "Content-Type": "text/plain"}),
    st.just({**AUTH, "Content-Type": "application/json", "Content-Encoding": "br"}),
    st.just({**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"}),
    st.just({"Authorization": "Bearer wrong", "Content-Type": "application/json"}),
    st.just({"Content-Type": "application/json"}),
)


@FUZZ
@given(body=bad_bodies, hdrs=headers)
def test_rejected_requests_are_4xx_and_queue_nothing(
    ingest: Ingest, body: bytes, hdrs: dict[str, str]
) -> None:
    status, _ = ingest.request("POST", "/v1/events/ingest", body, hdrs)
    assert 400 <= status < 500
    assert ingest.queued() == 0


@FUZZ
@given(
    path=st.sampled_from(
        [
            "/v1/attempts",
            "/v1/failures",
            "/v1/events",
            "/v1/events/recent",
            "/v1/tasks",
            "/v1/attempts/x",
            "/v1/graph/summary",
        ]
    ),
    name=st.sampled_from(["limit", "after", "cursor", "target", "status", "task_id"]),
    value=st.text(alphabet=st.characters(codec="ascii", exclude_characters="&#"), max_size=40),
)
def test_query_parameters_never_5xx(ingest: Ingest, path: str, name: str, value: str) -> None:
    status, _ = ingest.request("GET", f"{path}?{name}={quote(value)}", headers=AUTH)
    assert 0 < status < 500


def test_trickling_body_does_not_hang(ingest: Ingest) -> None:
    with socket.create_connection(("127.0.0.1", ingest.port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/events/ingest HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 100000\r\n\r\n{"
        )
        # The client stalls; the server must answer or close within its own timeout.
        sock.settimeout(30)
        try:
            first = sock.recv(4096)
        except TimeoutError:
            pytest.fail("the server held a stalled request body for more than 30 s")
    # LEVIATHAN_BODY_TIMEOUT_SECONDS=2 above: 408 with the connection closed.
    assert first.split(b" ")[1] == b"408"
    assert ingest.queued() == 0


def test_token_absent_from_logs_and_metrics(ingest: Ingest) -> None:
    ingest.request("POST", "/v1/events/ingest", b"{", {**AUTH, "Content-Type": "application/json"})
    ingest.request("GET", "/v1/stats", headers={"Authorization": f"Bearer {TOKEN}x"})
    status, metrics = ingest.request("GET", "/metrics", headers=AUTH)
    assert status == 200
    assert TOKEN.encode() not in metrics
    assert TOKEN not in ingest.log.read_text(errors="replace")
