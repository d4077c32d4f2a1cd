"""Which tiers one process serves: the composition root of the HTTP processes.

Pipeline position: above the tiers. ``ingest`` and ``query`` never import each other; a
process that serves writes and reads behind one URL (``leviathan-cp ingest`` by default,
``leviathan-cp dev``, the original's clients) gets the read API here, by handing
:func:`mount_reads` (the query tier's :func:`query.app.mount`) to the ingest app as its
``read_api``.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from redis.asyncio import Redis

from ingest.app import create_app
from ingest.settings import IngestSettings
from query.app import mount
from query.deps import QueryDeps


def mount_reads(app: web.Application, settings: IngestSettings, redis: Callable[[], Redis]) -> None:
    """The query tier's routes on an ingest app built from ``settings``."""
    deps = QueryDeps(
        layout=settings.layout, redis=redis, autonomy_config=settings.autonomy_config_path
    )
    mount(app, deps)


def ingest_app(settings: IngestSettings, redis: Redis | None = None) -> web.Application:
    """An ingest app that serves the read API too (while ``settings.serve_reads``)."""
    return create_app(settings, redis, read_api=mount_reads)


def ingest_main(argv: list[str]) -> int:
    """``leviathan-cp ingest``: ``python -m ingest`` with the read API mounted."""
    from ingest.__main__ import main

    return main(argv, read_api=mount_reads)


def query_main(argv: list[str]) -> int:
    """``leviathan-cp query``: the read tier on its own."""
    from query.__main__ import main

    return main(argv)
