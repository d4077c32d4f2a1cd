"""A real ``python -m ingest`` process for the hostile-client tests, and the bodies they send.

The process runs against a Redis the test owns; its peak RSS is the kernel's high-water
mark (``VmHWM`` in ``/proc/PID/status``), the figure the pod's memory limit is about.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from leviathan_cp.ports import free_port
from storage.queue import StreamLayout
from tests.chaos.chaos_support import Child
from tests.factories import body, event

TOKEN = "hostile-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
LAYOUT = StreamLayout(prefix="hostile", partitions=4)
MIB = 1024 * 1024
PEAK_RSS_LIMIT_MIB = 400  # the target whatever the body within the limits


class IngestProcess:
    """``python -m ingest`` on a free port, stopped (SIGKILL at worst) by :meth:`stop`."""

    def __init__(self, redis_url: str, workdir: Path, **env: str) -> None:
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("LEVIATHAN_")}
        environ.update(
            LEVIATHAN_CONTROL_PLANE_TOKEN=TOKEN,
            LEVIATHAN_REDIS_URL=redis_url,
            LEVIATHAN_API_HOST="127.0.0.1",
            LEVIATHAN_API_PORT=str(self.port),
            LEVIATHAN_PARTITIONS=str(LAYOUT.partitions),
            LEVIATHAN_STREAM_PREFIX=LAYOUT.prefix,
            LEVIATHAN_NDJSON_DIR=str(workdir / "ndjson"),
            LEVIATHAN_DRAIN_SECONDS="0",
            **env,
        )
        self.log = workdir / "ingest.log"
        self.child = Child("ingest", [sys.executable, "-m", "ingest"], self.log, environ)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/v1/events/ingest"

    async def start(self) -> None:
        self.child.start()
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.child.alive, self.log.read_text()
                try:
                    async with session.get(f"{self.base}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"ingest did not become ready: {self.log.read_text()[-2000:]}")

    def peak_rss_mib(self) -> float:
        assert self.child.proc is not None
        assert self.child.alive, self.log.read_text()[-2000:]
        status = Path(f"/proc/{self.child.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def stop(self) -> None:
        self.child.stop(10)


def bundle_with(payload_value: bytes, bundle_id: str = "hostile-1") -> bytes:
    """A one-event bundle whose payload's ``x`` is the raw JSON ``payload_value``."""
    text = orjson.dumps(body("repo-a", bundle_id, [event("x.y", {"x": 0})]))
    return text.replace(b'"x":0', b'"x":' + payload_value, 1)


def empty_objects(n: int) -> bytes:
    """``"x":[{},{},…]``: three bytes of text per ~90 bytes of Python objects."""
    return bundle_with(b"[" + b",".join([b"{}"] * n) + b"]")


def zeros(n: int) -> bytes:
    return bundle_with(b"[" + b",".join([b"0"] * n) + b"]")


def wide(n: int) -> bytes:
    """One payload object with ``n`` keys that each occur once (no key cache helps)."""
    return bundle_with(orjson.dumps({f"k{i}": i for i in range(n)}))


def deep_arrays(depth: int) -> bytes:
    return bundle_with(b"[" * depth + b"]" * depth)


def huge_event(nbytes: int) -> bytes:
    return bundle_with(orjson.dumps("y" * nbytes))


def long_strings(total: int, events: int, bundle_id: str = "strings-1") -> bytes:
    size = total // events
    evs = [event("x.y", {"s": "y" * size}, event_id=f"{bundle_id}-{i}") for i in range(events)]
    return orjson.dumps(body("repo-a", bundle_id, evs))


def small_bundle(bundle_id: str) -> bytes:
    """An ordinary ~120-byte-payload bundle of one event."""
    ev = event("attempt.progress", {"attempt_id": bundle_id, "i": 1}, event_id=f"{bundle_id}-e")
    return orjson.dumps(body("repo-a", bundle_id, [ev]))


async def post(
    session: aiohttp.ClientSession, url: str, data: bytes, **headers: str
) -> tuple[int, dict[str, Any], float]:
    """Status, JSON answer and seconds taken."""
    started = time.monotonic()
    # a BytesIO, not bytes: aiohttp warns about (and the suite fails on) large raw bodies
    payload = io.BytesIO(data)
    async with session.post(url, data=payload, headers={**HEADERS, **headers}) as resp:
        answer = orjson.loads(await resp.read())
        if "Retry-After" in resp.headers:
            answer["retry_after"] = resp.headers["Retry-After"]
        return resp.status, answer, time.monotonic() - started
