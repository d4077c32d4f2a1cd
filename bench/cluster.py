"""Single node vs Redis Cluster in one run: consumer drain rate and ingest acceptance rate.

Pipeline position: measures both tiers on each queue topology, alternating round by round so
a slow spell of a shared host hits both alike. ``python -m bench.cluster`` starts a private
three-master cluster with one replica each on loopback ports (tests/cluster_support.py; it is
stopped at the end) unless ``--cluster-url`` names seed nodes, and uses
``LEVIATHAN_BENCH_REDIS_URL`` (default redis://127.0.0.1:6379/3) as the single node.

- consumer: :func:`bench.consumer.drain` — one in-process consumer (the real
  :class:`consumer.reader.Reader`) empties N pre-filled 20-event bundles into NDJSON;
- ingest: a real ``python -m ingest`` process per topology, posted to by ``--connections``
  concurrent aiohttp clients for ``--seconds``; accepted (202) events per second.

Prints each round's figures, the medians and the cluster/single ratios. On one machine the
three masters share its cores with everything else: the ratio says what the cluster's
routing costs, not what three hosts would gain.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.consumer import drain
from bench.streams import EVENTS_PER_BUNDLE, bundle
from consumer.settings import ConsumerSettings
from leviathan_cp.ports import free_port
from storage.config import StorageSettings
from tests.cluster_support import RedisClusterServers
from tests.consumer.process_support import ROOT

TOKEN = "bench-cluster-token-0123456789"
TOPOLOGIES = ("single", "cluster")


def _queue(topology: str, single: str, cluster: str) -> dict[str, Any]:
    if topology == "single":
        return {"redis_url": single}
    return {"redis_url": cluster, "redis_cluster": True}


async def consumer_round(topology: str, args: argparse.Namespace, cluster_url: str) -> float:
    """Events/s of one drain of ``--bundles`` bundles on ``topology``."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = ConsumerSettings(
            backend="ndjson",
            ndjson_dir=Path(tmp),
            stream_prefix=f"bench:cluster:{uuid.uuid4().hex[:8]}",
            partitions=args.partitions,
            batch=200,
            block_ms=20,
            consumer_name="bench",
            health_port=0,
            arq_redis_url=args.redis_url,
            **_queue(topology, args.redis_url, cluster_url),
        )
        seconds = await drain(settings, args.bundles)
    return float(args.bundles * EVENTS_PER_BUNDLE / seconds)


def _ingest_env(
    topology: str, args: argparse.Namespace, cluster_url: str, port: int
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEVIATHAN_", "POSTGRES_"))}
    queue = _queue(topology, args.redis_url, cluster_url)
    env.update(
        {
            "LEVIATHAN_CONTROL_PLANE_TOKEN": TOKEN,
            "LEVIATHAN_REDIS_URL": queue["redis_url"],
            "LEVIATHAN_REDIS_CLUSTER": "1" if topology == "cluster" else "0",
            "LEVIATHAN_STREAM_PREFIX": f"bench:cluster:{uuid.uuid4().hex[:8]}",
            "LEVIATHAN_PARTITIONS": str(args.partitions),
            "LEVIATHAN_API_HOST": "127.0.0.1",
            "LEVIATHAN_API_PORT": str(port),
            "LEVIATHAN_QUEUE_HIGH_WATER": "100000000",
            "LEVIATHAN_DRAIN_SECONDS": "0",
            # a shared Redis may hold others' data: only this run's lag may refuse it
            "LEVIATHAN_QUEUE_HIGH_WATER_BYTES": str(1 << 40),
            "LEVIATHAN_NDJSON_DIR": tempfile.mkdtemp(prefix="bench-cluster-"),
        }
    )
    return env


async def _post_for(url: str, seconds: float, connections: int, run: str) -> int:
    """Events accepted (202) by ``url`` from ``connections`` posters during ``seconds``."""
    accepted = 0
    stop_at = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    async def poster(worker: int) -> None:
        nonlocal accepted
        n = 0
        async with aiohttp.ClientSession(headers=headers) as session:
            while time.monotonic() < stop_at:
                body = orjson.dumps(bundle(n * connections + worker, run).model_dump(mode="json"))
                n += 1
                async with session.post(f"{url}/v1/events/ingest", data=body) as resp:
                    await resp.read()
                    if resp.status == 202:
                        accepted += EVENTS_PER_BUNDLE
                    elif resp.status != 503:
                        raise SystemExit(f"ingest answered {resp.status}: {await resp.text()}")

    await asyncio.gather(*(poster(w) for w in range(connections)))
    return accepted


async def ingest_round(topology: str, args: argparse.Namespace, cluster_url: str) -> float:
    """Accepted events/s of a real ingest process on ``topology``."""
    port = free_port()
    env = _ingest_env(topology, args, cluster_url, port)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "leviathan_cp",
        "ingest",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"{url}/readyz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise SystemExit(f"ingest on {topology} never became ready")
        await _post_for(url, 1.0, args.connections, uuid.uuid4().hex[:6])  # warm-up
        accepted = await _post_for(url, args.seconds, args.connections, uuid.uuid4().hex[:6])
        return float(accepted / args.seconds)
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)
        await _drop_streams(topology, args, cluster_url, env["LEVIATHAN_STREAM_PREFIX"])


async def _drop_streams(
    topology: str, args: argparse.Namespace, cluster_url: str, prefix: str
) -> None:
    settings = StorageSettings(
        stream_prefix=prefix,
        partitions=args.partitions,
        **_queue(topology, args.redis_url, cluster_url),
    )
    redis = settings.stream_redis()
    try:
        for key in [*settings.layout.streams(), settings.layout.meta]:
            await redis.delete(key)
    finally:
        await redis.aclose()


def _report(name: str, rates: dict[str, list[float]]) -> None:
    single, cluster = (statistics.median(rates[t]) for t in TOPOLOGIES)
    print(
        f"{name}: single median {single:,.0f} events/s, cluster median {cluster:,.0f} "
        f"events/s, cluster/single {cluster / single:.2f}"
    )


async def main(args: argparse.Namespace) -> None:
    servers: RedisClusterServers | None = None
    cluster_url = args.cluster_url
    if cluster_url is None:
        servers = RedisClusterServers(Path(tempfile.mkdtemp(prefix="bench-redis-cluster-")))
        servers.start()
        cluster_url = servers.url
    try:
        consumer: dict[str, list[float]] = {t: [] for t in TOPOLOGIES}
        ingest: dict[str, list[float]] = {t: [] for t in TOPOLOGIES}
        for round_ in range(1, args.rounds + 1):
            order = TOPOLOGIES if round_ % 2 else TOPOLOGIES[::-1]
            for topology in order:
                if not args.skip_consumer:
                    rate = await consumer_round(topology, args, cluster_url)
                    consumer[topology].append(rate)
                    print(f"round {round_} consumer {topology:7}: {rate:,.0f} events/s")
                if not args.skip_ingest:
                    rate = await ingest_round(topology, args, cluster_url)
                    ingest[topology].append(rate)
                    print(f"round {round_} ingest   {topology:7}: {rate:,.0f} events/s")
        if not args.skip_consumer:
            _report("consumer drain", consumer)
        if not args.skip_ingest:
            _report("ingest accepted", ingest)
    finally:
        if servers is not None:
            servers.stop()


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--redis-url",
        default=os.environ.get("LEVIATHAN_BENCH_REDIS_URL", "redis://127.0.0.1:6379/3"),
        help="the single node (also arq's node for the consumer rounds)",
    )
    p.add_argument("--cluster-url", help="seed nodes of an existing cluster (default: start one)")
    p.add_argument("--partitions", type=int, default=12)
    p.add_argument("--bundles", type=int, default=3000)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-consumer", action="store_true")
    p.add_argument("--skip-ingest", action="store_true")
    asyncio.run(main(p.parse_args()))


if __name__ == "__main__":
    cli()
