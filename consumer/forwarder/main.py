"""``leviathan-cp forward``: run the Spider forwarder as a process of its own.

Pipeline position: an entry point beside ``leviathan-cp consumer``. Builds the one
:class:`ForwarderSettings` object (a bad or missing setting prints one line and exits 2),
records/checks the partition count, serves /healthz, /readyz, /metrics and forwards until
SIGTERM/SIGINT, after which the POST in flight is finished and acked and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable

from pydantic import ValidationError
from redis.exceptions import RedisError

from consumer.forwarder import health as forwarder_health
from consumer.forwarder.forward import Forwarder, redis_client
from consumer.forwarder.metrics import SpiderMetrics
from consumer.forwarder.settings import ForwarderSettings
from consumer.forwarder.stream import PartitionStream
from storage.config import settings_error_line
from storage.queue import PartitionMismatchError, ensure_partition_count

logger = logging.getLogger(__name__)


async def _partition_count(fwd: Forwarder) -> bool:
    """Refuse a partition count other than the recorded one; wait for Redis meanwhile."""
    delay = fwd.settings.spider_retry_min_s
    while not fwd.stopping:
        try:
            await ensure_partition_count(fwd.redis, fwd.layout)
            return True
        except (RedisError, OSError) as exc:
            logger.warning("redis not reachable yet, retry in %.1fs: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    return False


async def serve(settings: ForwarderSettings) -> int:
    fwd = Forwarder(
        redis_client(settings.redis_url, settings, cluster=settings.redis_cluster),
        settings.layout,
        settings,
        settings.consumer_name,
        SpiderMetrics(),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, fwd.stop)
    try:
        runner = await forwarder_health.start(fwd)
    except forwarder_health.HealthServerError as exc:
        print(f"forward: {exc}", file=sys.stderr)
        await fwd.redis.aclose()
        return 1
    try:
        if await _partition_count(fwd):
            logger.info(
                "forwarding %d partitions to %s as %s (group %s)",
                settings.partitions,
                settings.spider_url,
                settings.consumer_name,
                settings.spider_group,
            )
            await fwd.run()
    except PartitionMismatchError as exc:
        print(f"forward: {exc}", file=sys.stderr)
        return 1
    finally:
        await runner.cleanup()
        await fwd.redis.aclose()
    return 0


async def remove_group(settings: ForwarderSettings) -> int:
    """Delete the forwarder's group from every partition; returns how many existed."""
    redis = settings.stream_redis()
    try:
        removed = 0
        for p in range(settings.partitions):
            part = PartitionStream(
                redis, settings.layout, p, settings.spider_group, settings.consumer_name, 0
            )
            removed += await part.destroy_group()
        return removed
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None, prepare: Callable[[], object] | None = None) -> int:
    """``prepare`` runs once the arguments are parsed (``--help`` exits before it)."""
    parser = argparse.ArgumentParser(
        prog="leviathan-cp forward",
        description="Run the Spider forwarder as a process of its own: every accepted bundle "
        "is posted to LEVIATHAN_SPIDER_URL at least once, in order per partition.",
    )
    parser.add_argument(
        "--remove-group",
        action="store_true",
        help="delete the forwarder's consumer group from every partition and exit (when "
        "forwarding is switched off for good: trimming then no longer keeps unsent bundles)",
    )
    args = parser.parse_args(argv)
    if prepare is not None:
        prepare()
    try:
        settings = ForwarderSettings()
    except ValidationError as exc:
        print(settings_error_line(exc), file=sys.stderr)
        return 2
    if args.remove_group:
        try:
            removed = asyncio.run(remove_group(settings))
        except (RedisError, OSError) as exc:
            print(f"cannot reach Redis: {exc}", file=sys.stderr)
            return 1
        print(f"removed group {settings.spider_group!r} from {removed} partition(s)")
        return 0
    if settings.spider_url is None:
        print(
            "configuration error: LEVIATHAN_SPIDER_URL: Spider's base URL is required",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
