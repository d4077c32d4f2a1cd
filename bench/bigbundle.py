"""Big bundles with bounded memory: ``python -m bench.bigbundle``.

Pipeline position: the whole pipeline under the bundles that used to break it. Each
scenario starts its own ``redis-server`` (free port, temp dir, no persistence: nothing of
the shared Redis is touched), a real ``python -m ingest`` and, where it needs one, a real
``python -m consumer`` on the NDJSON backend, and prints its figures:

  big      one bootstrap bundle of 100,000 ``file.discovered`` events (~30 MiB of JSON),
           posted gzip with ``?wait=30``: status, events stored (counted in the NDJSON
           files), entries it became, ingest peak RSS.
  burst    16 concurrent uncompressed ~9 MiB bundles against one ingest process: the
           statuses, whether it survived, its peak RSS, and that every 202 bundle is in
           the stream whole and no 503 bundle left anything there.
  backlog  a backlog of N bundles queued before a consumer starts, drained by one
           consumer: its peak RSS and drain time, with the default batch byte bound and
           (``--unbounded``) with the bound lifted, i.e. the entry count alone.

Peak RSS is the kernel's high-water mark (VmHWM). The host may be shared: times are
indicative, memory figures are not affected.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from bench.stack import _wait_http, peak_rss_mib
from leviathan_cp.ports import free_port
from storage.queue import GROUP, StreamLayout

TOKEN = "bench-token"
PARTITIONS = 8
LAYOUT = StreamLayout(partitions=PARTITIONS)
MIB = 1024 * 1024


def bootstrap(files: int, target: str, bundle_id: str) -> dict[str, Any]:
    """A repo indexer's bootstrap bundle, shaped like the real workers' (one event per file)."""
    events: list[dict[str, Any]] = [
        {
            "event_id": f"bootstrap-{target}-started",
            "event_type": "bootstrap.started",
            "timestamp": "2026-11-28T08:00:00Z",
            "actor_id": None,
            "payload": {"target_id": target},
        }
    ]
    for i in range(files):
        path = f"services/backend/src/pkg_{i // 50:04d}/subpkg_{i % 7}/module_{i:06d}.py"
        digest = hashlib.sha256(f"{target}/{path}".encode()).hexdigest()[:12]
        events.append(
            {
                "event_id": f"file-{bundle_id}-{digest}",
                "event_type": "file.discovered",
                "timestamp": "2026-11-28T08:00:05Z",
                "actor_id": None,
                "payload": {
                    "target_id": target,
                    "path": path,
                    "language": "python",
                    "size_bytes": 1000 + i,
                    "sha256": digest * 5,
                },
            }
        )
    events.append(
        {
            "event_id": f"repo-indexed-{target}",
            "event_type": "repo.indexed",
            "timestamp": "2026-11-28T08:01:00Z",
            "actor_id": None,
            "payload": {"target_id": target, "files": files},
        }
    )
    return {"target": target, "bundle_id": bundle_id, "artifacts": None, "events": events}


class Tier:
    """A private redis-server plus ingest (and optionally consumer) processes."""

    def __init__(self, extra_env: dict[str, str] | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="leviathan-bigbundle-"))
        self.redis_port = free_port()
        self.api_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {
            **os.environ,
            "LEVIATHAN_CONTROL_PLANE_TOKEN": TOKEN,
            "LEVIATHAN_CONTROL_PLANE_BACKEND": "ndjson",
            "LEVIATHAN_NDJSON_DIR": str(self.tmp / "ndjson"),
            "LEVIATHAN_PARTITIONS": str(PARTITIONS),
            "LEVIATHAN_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "LEVIATHAN_API_HOST": "127.0.0.1",
            "LEVIATHAN_API_PORT": str(self.api_port),
            "LEVIATHAN_CONSUMER_HOST": "127.0.0.1",
            "LEVIATHAN_CONSUMER_PORT": str(free_port()),
            "HOSTNAME": "bench-consumer",
            **(extra_env or {}),
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.tmp / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            argv, env=env or self.env, stdout=log, stderr=subprocess.STDOUT
        )

    async def start(self, *, consumer: bool) -> None:
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1"]
        self.spawn("redis", [*argv, "--dir", str(self.tmp), "--save", "", "--appendonly", "no"])
        await asyncio.sleep(0.3)
        self.spawn("ingest", [sys.executable, "-m", "leviathan_cp", "ingest"])
        await _wait_http(f"{self.url}/readyz", 30, self.procs["ingest"])
        if consumer:
            await self.start_consumer()

    async def start_consumer(self, env: dict[str, str] | None = None, ready: bool = True) -> None:
        self.spawn("consumer", [sys.executable, "-m", "consumer"], {**self.env, **(env or {})})
        if ready:
            port = self.env["LEVIATHAN_CONSUMER_PORT"]
            await _wait_http(f"http://127.0.0.1:{port}/readyz", 60, self.procs["consumer"])

    def redis(self) -> Redis:
        return Redis(port=self.redis_port)

    def peak(self, name: str) -> float:
        proc = self.procs[name]
        return round(peak_rss_mib(proc.pid), 1) if proc.poll() is None else float("nan")

    def log_tail(self, name: str, lines: int = 15) -> str:
        text = (self.tmp / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def stored_events(self) -> int:
        return sum(
            sum(1 for _ in path.open("rb")) for path in (self.tmp / "ndjson").glob("*.ndjson")
        )

    def stop(self) -> None:
        for name in ("ingest", "consumer", "redis"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


async def _post(
    session: aiohttp.ClientSession, url: str, data: bytes, *, gzipped: bool, wait: int = 0
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    query = f"?wait={wait}" if wait else ""
    async with session.post(f"{url}/v1/events/ingest{query}", data=data, headers=headers) as r:
        return r.status, orjson.loads(await r.read())


async def _stream_bundles(redis: Redis) -> Counter[str]:
    """Events per bundle id over every entry of every partition stream."""
    found: Counter[str] = Counter()
    for stream in LAYOUT.streams():
        for _, fields in await redis.xrange(stream):
            bundle = orjson.loads(fields[b"bundle"])
            found[bundle["bundle_id"]] += len(bundle["events"])
    return found


async def scenario_big(files: int) -> None:
    body = orjson.dumps(bootstrap(files, "big-repo", "bootstrap-big-repo"))
    packed = gzip.compress(body, 6)
    tier = Tier()
    try:
        await tier.start(consumer=True)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            started = time.perf_counter()
            status, answer = await _post(session, tier.url, packed, gzipped=True, wait=30)
            took = time.perf_counter() - started
        expected = files + 2
        for _ in range(240):  # the consumer may still be writing the last chunks
            if tier.stored_events() >= expected:
                break
            await asyncio.sleep(0.5)
        async with tier.redis() as redis:
            entries = sum([await redis.xlen(s) for s in LAYOUT.streams()])
        print(
            f"big: {expected} events, {len(body) / MIB:.1f} MiB JSON, {len(packed) / MIB:.1f} MiB "
            f"gzip -> {status} {answer.get('status') or answer.get('detail')} in {took:.1f} s; "
            "stored "
            f"{tier.stored_events()}/{expected}; {entries} stream entries left untrimmed; "
            f"ingest peak RSS {tier.peak('ingest')} MiB, consumer {tier.peak('consumer')} MiB"
        )
    finally:
        tier.stop()


async def scenario_burst(files: int, clients: int) -> None:
    bodies = [
        orjson.dumps(bootstrap(files, f"repo-{i}", f"bootstrap-burst-{i}")) for i in range(clients)
    ]
    tier = Tier()
    try:
        await tier.start(consumer=False)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            started = time.perf_counter()
            results = await asyncio.gather(
                *(_post(session, tier.url, b, gzipped=False) for b in bodies),
                return_exceptions=True,
            )
            took = time.perf_counter() - started
        statuses = Counter(r[0] if isinstance(r, tuple) else type(r).__name__ for r in results)
        async with tier.redis() as redis:
            queued = await _stream_bundles(redis)
        whole = partial = leaked = 0
        for i, result in enumerate(results):
            have = queued.get(f"bootstrap-burst-{i}", 0)
            if isinstance(result, tuple) and result[0] == 202:
                whole += have == files + 2
                partial += have != files + 2
            else:
                leaked += have > 0
        print(
            f"burst: {clients} x {len(bodies[0]) / MIB:.1f} MiB ({files + 2} events) "
            f"concurrently in {took:.1f} s -> {dict(statuses)}; ingest alive "
            f"{tier.alive('ingest')}, peak RSS {tier.peak('ingest')} MiB; 202 bundles whole in "
            f"the stream: {whole}, incomplete: {partial}; refused bundles with entries: {leaked}"
        )
    finally:
        tier.stop()


async def _drained(redis: Redis) -> bool:
    for stream in LAYOUT.streams():
        groups = await redis.xinfo_groups(stream)
        row = next((g for g in groups if g["name"] == GROUP.encode()), None)
        if (
            row is None
            or row["pending"]
            or row["last-delivered-id"] != (await redis.xinfo_stream(stream))["last-generated-id"]
        ):
            return False
    return True


async def scenario_backlog(bundles: int, files: int, unbounded: bool) -> None:
    tier = Tier()
    try:
        await tier.start(consumer=False)
        body = bootstrap(files, "backlog", "x")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            sem = asyncio.Semaphore(4)

            async def post(i: int) -> int:
                body["bundle_id"] = bid = f"backlog-{i}"
                for k, ev in enumerate(body["events"]):
                    ev["event_id"] = f"{bid}-{k}"
                data = gzip.compress(orjson.dumps(body), 1)
                async with sem:
                    return (await _post(session, tier.url, data, gzipped=True))[0]

            statuses = Counter([await post(i) for i in range(bundles)])
        async with tier.redis() as redis:
            info = await redis.info("memory")
            entries = sum([await redis.xlen(s) for s in LAYOUT.streams()])
            env = {"LEVIATHAN_CONSUMER_BATCH_BYTES": str(1 << 40)} if unbounded else {}
            started = time.perf_counter()
            await tier.start_consumer(env, ready=False)
            while not await _drained(redis):
                if not tier.alive("consumer"):
                    raise RuntimeError("the consumer died:\n" + tier.log_tail("consumer"))
                await asyncio.sleep(0.5)
            took = time.perf_counter() - started
        label = "entry count only (bound lifted)" if unbounded else "default byte bound"
        print(
            f"backlog ({label}): {bundles} bundles x {files + 2} events = {entries} entries, "
            f"Redis used_memory {int(info['used_memory']) / MIB:.0f} MiB, posted "
            f"{dict(statuses)}; drained in {took:.1f} s, {tier.stored_events()} events stored; "
            f"consumer peak RSS {tier.peak('consumer')} MiB"
        )
    finally:
        tier.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=["big", "burst", "backlog"])
    parser.add_argument(
        "--files", type=int, default=99_998, help="files of the big bundle (+2 events)"
    )
    parser.add_argument("--burst-files", type=int, default=28_000, help="files per bundle (~9 MiB)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--backlog", type=int, default=500, help="bundles in the backlog")
    parser.add_argument("--backlog-files", type=int, default=3_000, help="events per bundle")
    parser.add_argument("--unbounded", action="store_true", help="also drain without the bound")
    args = parser.parse_args()
    for name in args.scenarios:
        if name == "big":
            asyncio.run(scenario_big(args.files))
        elif name == "burst":
            asyncio.run(scenario_burst(args.burst_files, args.clients))
        elif name == "backlog":
            asyncio.run(scenario_backlog(args.backlog, args.backlog_files, unbounded=False))
            if args.unbounded:
                asyncio.run(scenario_backlog(args.backlog, args.backlog_files, unbounded=True))
        else:
            parser.error(f"unknown scenario {name!r}")


if __name__ == "__main__":
    main()
