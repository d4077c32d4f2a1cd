"""Ingest throughput/latency benchmark: ``python -m bench.ingest``.

Pipeline position: measures the HTTP front door against the real Redis. In ONE run, with
20-event bundles and 16 concurrent connections, it serves three handlers — each in its own
server process (uvloop, no access log, the same collector tuning and response code),
separate from the load generator — and prints events/s accepted and p50/p99 latency for
each, round by round (a, b, c alternate so a slow spell of a shared machine hits all
three), with the server process's CPU time per request during the load (from /proc),
then medians and the ratios c/a and b/a:

  (a) validate-only: the real handler's body reading, parsing and validation, no Redis;
  (b) naive: one XADD round trip per request;
  (c) the real ingest app (auth, metrics, backpressure, group-commit publisher).

Load comes from ``wrk`` with a Lua script when installed, else from an aiohttp generator.
Redis: LEVIATHAN_BENCH_REDIS_URL (default redis://127.0.0.1:6379/3); its keys under the
``bench-ingest`` prefix are deleted before each phase and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web
from redis.asyncio import Redis

from bench.machine import cpu_seconds
from ingest.app import HANDLER_ARGS, create_app
from ingest.body import Limits, read_prepared
from ingest.handlers import json_bytes
from ingest.settings import IngestSettings
from leviathan_cp.ports import free_port
from storage.queue import StreamLayout
from webcore.serve import tune_gc

TOKEN = "bench-token"
PREFIX = "bench-ingest"
PARTITIONS = 8
EVENTS = 20
CONNECTIONS = 16
SECONDS = 5
ROUNDS = 3
# One wrk thread: it drives 16 connections at well over the server's rate, and a second
# thread would only take CPU from the single-threaded server and Redis on a 2-core machine.
WRK_THREADS = 1
MAX = 10 * 1024 * 1024
MODES = ("validate", "naive", "real")


def bundle(i: int) -> bytes:
    events = [
        {
            "event_id": f"evt-{i}-{k}",
            "event_type": "attempt.progress",
            "timestamp": "2026-11-28T12:00:00Z",
            "actor_id": f"worker-{i}",
            "payload": {"attempt_id": f"att-{i}", "step": k, "status": "running"},
        }
        for k in range(EVENTS)
    ]
    return orjson.dumps({"target": "bench", "bundle_id": f"bundle-att-{i}", "events": events})


def _settings(redis_url: str) -> IngestSettings:
    return IngestSettings(
        token=TOKEN,
        redis_url=redis_url,
        partitions=PARTITIONS,
        stream_prefix=PREFIX,
        queue_high_water=100_000_000,
    )


def _simple_app(mode: str, redis_url: str) -> web.Application:
    layout = StreamLayout(prefix=PREFIX, partitions=PARTITIONS)
    redis = Redis.from_url(redis_url)
    limits = Limits.of(_settings(redis_url))

    async def handle(request: web.Request) -> web.Response:
        # the real handler's read, parse and validation (no budget)
        prepared = await read_prepared(request, limits)
        if mode == "naive":
            stream = layout.stream(layout.partition_of(prepared.bundle_id))
            for fields in prepared.entries("tok-bench", limits.entry_max, limits.max_event):
                await redis.xadd(stream, fields)
        body = {"status": "accepted", "bundle_id": prepared.bundle_id, "ingested": prepared.count}
        return json_bytes(body, status=202)  # the real handler's response, same cost

    app = web.Application(client_max_size=MAX + 65536)
    app.router.add_post("/v1/events/ingest", handle)
    return app


def serve(mode: str, port: int, redis_url: str) -> None:
    """Server process body: one of the three handlers on uvloop."""
    import uvloop

    app = _simple_app(mode, redis_url) if mode != "real" else create_app(_settings(redis_url))
    # python -m ingest tunes the collector (webcore.serve.tune_gc); every server here gets the
    # same tuning so the ratio compares handlers, not collector settings.
    tune_gc()
    uvloop.install()
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        **HANDLER_ARGS,
    )


LUA = """
local bodies = {}
local n = 0
function init(args)
  for line in io.lines(args[1]) do n = n + 1; bodies[n] = line end
end
local i = 0
request = function()
  i = i % n + 1
  return wrk.format("POST", "/v1/events/ingest", {
    ["Authorization"] = "Bearer TOKEN",
    ["Content-Type"] = "application/json"}, bodies[i])
end
"""


def _ms(value: str) -> float:
    num, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(num) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(
    port: int, workdir: Path, seconds: int = SECONDS, threads: int = WRK_THREADS
) -> tuple[float, float, float, int]:
    script = workdir / "post.lua"
    script.write_text(LUA.replace("TOKEN", TOKEN))
    bodies = workdir / "bodies.txt"
    bodies.write_bytes(b"\n".join(bundle(i) for i in range(256)))
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{CONNECTIONS}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
            "--",
            str(bodies),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if os.environ.get("BENCH_VERBOSE"):
        print(out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    ok = requests - (int(bad.group(1)) if bad else 0)
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    return ok * EVENTS / seconds, p50, p99, requests


async def run_aiohttp(port: int, seconds: int = SECONDS) -> tuple[float, float, float, int]:
    """Fallback generator when wrk is not installed."""
    bodies = [bundle(i) for i in range(256)]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    url = f"http://127.0.0.1:{port}/v1/events/ingest"
    latencies: list[float] = []
    ok = 0
    deadline = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker(w: int) -> None:
            nonlocal ok
            i = w
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                async with session.post(url, data=bodies[i % 256], headers=headers) as resp:
                    await resp.read()
                    ok += resp.status == 202
                latencies.append((time.perf_counter() - start) * 1000)
                i += CONNECTIONS

        await asyncio.gather(*(worker(w) for w in range(CONNECTIONS)))
    cuts = statistics.quantiles(latencies, n=100)
    return ok * EVENTS / seconds, cuts[49], cuts[98], len(latencies)


async def _clean(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{PREFIX}*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("server did not start")


def measure(
    mode: str, redis_url: str, workdir: Path, seconds: int = SECONDS
) -> tuple[float, float, float, float]:
    """events/s, p50 ms, p99 ms, and the server's CPU µs per request during the load."""
    asyncio.run(_clean(redis_url))
    port = free_port()
    cmd = [sys.executable, "-m", "bench.ingest", "--serve", mode, "--port", str(port)]
    proc = subprocess.Popen(cmd, env={**os.environ, "LEVIATHAN_BENCH_REDIS_URL": redis_url})
    try:
        _wait_listening(port, proc)
        time.sleep(0.5)  # start-up (imports, app, Redis connection) is not the request's cost
        before = cpu_seconds(proc.pid)
        if shutil.which("wrk"):
            rate, p50, p99, requests = run_wrk(port, workdir, seconds)
        else:
            rate, p50, p99, requests = asyncio.run(run_aiohttp(port, seconds))
        used = cpu_seconds(proc.pid) - before
        return rate, p50, p99, used * 1e6 / (requests or 1)
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=MODES)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--seconds", type=int, default=SECONDS)
    args = parser.parse_args(argv)
    redis_url = os.environ.get("LEVIATHAN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/3")
    if args.serve:
        serve(args.serve, args.port, redis_url)
        return 0
    generator = f"wrk -t{WRK_THREADS}" if shutil.which("wrk") else "aiohttp"
    print(
        f"ingest bench: {EVENTS}-event bundles, {CONNECTIONS} connections, "
        f"{args.rounds} rounds of {args.seconds}s per server, generator={generator}, "
        f"redis={redis_url}"
    )
    # Rounds alternate the servers so that a slow spell of a shared machine hits all of
    # them alike; each round's ratio compares neighbouring runs.
    runs: dict[str, list[tuple[float, float, float, float]]] = {mode: [] for mode in MODES}
    ratios: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(1, args.rounds + 1):
            for label, mode in zip("abc", MODES, strict=True):
                rate, p50, p99, cpu = measure(mode, redis_url, Path(tmp), args.seconds)
                runs[mode].append((rate, p50, p99, cpu))
                print(
                    f"round {r} ({label}) {mode:9s} {rate:8.0f} events/s  "
                    f"p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  cpu {cpu:5.0f} us/request"
                )
            ratios.append(runs["real"][-1][0] / (runs["validate"][-1][0] or 1.0))
            print(f"round {r} c/a = {ratios[-1]:.2f}")
    asyncio.run(_clean(redis_url))
    print("medians over rounds:")
    for label, mode in zip("abc", MODES, strict=True):
        rate, p50, p99, cpu = (statistics.median(x[i] for x in runs[mode]) for i in range(4))
        worst = max(x[2] for x in runs[mode])
        print(
            f"({label}) {mode:9s} {rate:8.0f} events/s  p50 {p50:6.2f} ms  "
            f"p99 {p99:6.2f} ms (worst {worst:.2f})  server cpu {cpu:5.0f} us/request"
        )
    naive = statistics.median(
        b[0] / (a[0] or 1.0) for a, b in zip(runs["validate"], runs["naive"], strict=True)
    )
    print(
        f"c/a = {statistics.median(ratios):.2f} (rounds {min(ratios):.2f}-{max(ratios):.2f})"
        f"   b/a = {naive:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
