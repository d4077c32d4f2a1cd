"""``leviathan-cp migrate`` and ``leviathan-cp verify``: one-shot storage admin commands.

Pipeline position: beside the tiers, talking to storage only. Settings come from
:class:`storage.config.StorageSettings` (same env names as the tiers); a bad setting or an
unreachable database prints one line and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic import ValidationError

from storage.base import StorageError
from storage.config import StorageSettings, create_store, settings_error_line


def _settings() -> StorageSettings | None:
    try:
        return StorageSettings()
    except ValidationError as exc:
        print(settings_error_line(exc), file=sys.stderr)
        return None


def migrate_main(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="leviathan-cp migrate", description="Apply pending PostgreSQL migrations."
    ).parse_args(argv)
    settings = _settings()
    if settings is None:
        return 2
    from storage.postgres import migrate

    try:
        applied = asyncio.run(migrate(settings.postgres_url()))
    except (OSError, StorageError) as exc:
        print(f"migrate: cannot reach PostgreSQL: {exc}", file=sys.stderr)
        return 2
    print(f"applied: {', '.join(applied)}" if applied else "schema up to date")
    return 0


async def _verify(settings: StorageSettings) -> int:
    store = create_store(settings)
    await store.open()
    broken = 0
    try:
        for partition in range(settings.partitions):
            status = await store.verify_chain(partition)
            if status.ok:
                print(f"partition {partition}: ok, {status.checked} events")
            else:
                broken += 1
                print(
                    f"partition {partition}: BROKEN at seq {status.broken_at_seq} "
                    f"(event {status.broken_event_id}): {status.reason}"
                )
    finally:
        await store.close()
    return 1 if broken else 0


def verify_main(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="leviathan-cp verify",
        description="Walk every partition's hash chain in the configured storage.",
    ).parse_args(argv)
    settings = _settings()
    if settings is None:
        return 2
    if settings.backend == "ndjson" and not settings.ndjson_dir.is_dir():
        # opening the store would create it, and an empty log verifies: a mistyped path
        # must not read as "every chain intact"
        print(
            f"verify: no NDJSON log at {settings.ndjson_dir} (LEVIATHAN_NDJSON_DIR)",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(_verify(settings))
    except (OSError, StorageError) as exc:
        print(f"verify: storage unavailable: {exc}", file=sys.stderr)
        return 2
