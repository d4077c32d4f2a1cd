"""``python -m ingest``: build settings once, serve the ingest app, drain on SIGTERM.

Pipeline position: process entry point of the ingest tier. Bad settings print one line
naming the variable and exit 2; a partition-count mismatch or unreachable Redis at start
prints one line and exits 1. SIGTERM flips readiness to 503 at once, waits
LEVIATHAN_DRAIN_SECONDS so the load balancer removes the endpoint, then stops listening,
lets in-flight requests finish (their XADDs complete) and closes Redis; exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from aiohttp import web
from pydantic import ValidationError
from redis.exceptions import RedisError, ResponseError

from ingest.app import HANDLER_ARGS, RUNTIME_KEY, create_app, tune_gc, tune_malloc
from ingest.auth import TokenSet
from ingest.settings import IngestSettings
from storage.base import StorageError
from storage.config import settings_error_line
from storage.queue import PartitionMismatchError
from storage.redisconn import refusal_line

log = logging.getLogger("ingest")


def _no_token_line(settings: IngestSettings) -> str | None:
    """One line when the configured token sources hold no token at all, else ``None``."""
    if TokenSet.from_settings(settings).usable():
        return None
    sources = [
        name
        for name, value in (
            ("LEVIATHAN_CONTROL_PLANE_TOKEN", settings.token),
            ("LEVIATHAN_CONTROL_PLANE_TOKENS", settings.tokens),
            ("LEVIATHAN_CONTROL_PLANE_TOKEN_FILE", settings.token_file),
        )
        if value is not None
    ]
    where = f" ({settings.token_file}: missing, unreadable or empty)" if settings.token_file else ""
    verb = "holds" if len(sources) == 1 else "hold"
    return f"ingest: no bearer token to accept: {' and '.join(sources)} {verb} none{where}"


async def serve(settings: IngestSettings) -> int:
    problem = _no_token_line(settings)
    if problem is not None:  # every request would be a 401: refuse instead of running so
        print(problem, file=sys.stderr)
        return 2
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, **HANDLER_ARGS)
    try:
        await runner.setup()
    except PartitionMismatchError as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 1
    except ResponseError as exc:
        print(f"ingest: Redis refused the start-up check: {refusal_line(exc)}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        print(f"ingest: cannot reach Redis at start: {refusal_line(exc)}", file=sys.stderr)
        return 1
    except StorageError as exc:  # unreachable storage is retried (store_ctx); this is worse
        print(f"ingest: storage: {exc}", file=sys.stderr)
        return 1
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as exc:
        print(
            f"ingest: cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        await runner.cleanup()
        return 1
    tune_gc()  # after start-up: what exists now lives as long as the process
    tune_malloc()
    log.info("ingest listening on %s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    app[RUNTIME_KEY].draining = True
    log.info("draining for %.1f s", settings.drain_seconds)
    await asyncio.sleep(settings.drain_seconds)
    await runner.cleanup()
    log.info("ingest stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    # configuration comes from the environment (docs/operations.md, "Configuration");
    # the arguments are parsed first so that --help needs none of it
    argparse.ArgumentParser(
        prog="leviathan-cp ingest",
        description="Run the HTTP ingest + query tier: accept event bundles, queue them in the "
        "Redis streams, serve the query API and the operator console. Configured by "
        "environment variables (docs/operations.md); needs a bearer token "
        "(LEVIATHAN_CONTROL_PLANE_TOKEN, _TOKENS or _TOKEN_FILE).",
    ).parse_args(argv)
    try:
        settings = IngestSettings()
    except ValidationError as exc:
        print(settings_error_line(exc), file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(serve(settings))
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
