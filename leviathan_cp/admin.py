"""``leviathan-cp migrate`` and ``leviathan-cp verify``: one-shot storage admin commands.

Pipeline position: beside the tiers, talking to storage only. Settings come from
:class:`storage.config.StorageSettings` (same env names as the tiers); a bad setting or an
unreachable database prints one line and exits 2, never a traceback. Run in a folder where
``leviathan-cp dev`` is running, they use its data directory (:mod:`leviathan_cp.devstate`).

``verify`` resumes each partition after the prefix an earlier successful run verified
(sequence and hash, remembered in ``~/.leviathan/verified-chains.json`` per storage), after
checking that the stored event there still has that hash; ``--full`` walks every chain
from its first event (an edit inside a verified prefix is only found that way).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from pathlib import Path

import orjson
from pydantic import ValidationError

from leviathan_cp import devstate
from storage.base import StorageError
from storage.chain import ChainPoint
from storage.config import StorageSettings, create_store, settings_error_line

CHECKPOINTS = "verified-chains.json"


def settings_or_none() -> StorageSettings | None:
    """The storage settings, or None after printing the one-line reason."""
    try:
        return StorageSettings()
    except ValidationError as exc:
        print(settings_error_line(exc), file=sys.stderr)
        return None


def migrate_main(argv: list[str]) -> int:
    argparse.ArgumentParser(
        prog="leviathan-cp migrate", description="Apply pending PostgreSQL migrations."
    ).parse_args(argv)
    settings = settings_or_none()
    if settings is None:
        return 2
    from storage.postgres.migrate import migrate

    try:
        applied = asyncio.run(migrate(settings.postgres_url()))
    except (OSError, StorageError) as exc:
        print(f"migrate: cannot reach PostgreSQL: {exc}", file=sys.stderr)
        return 2
    print(f"applied: {', '.join(applied)}" if applied else "schema up to date")
    return 0


def _storage_key(settings: StorageSettings) -> str:
    if settings.backend == "ndjson":
        return f"ndjson:{settings.ndjson_dir.resolve()}"
    # hashed: the URL may hold a password
    return "postgres:" + hashlib.sha256(settings.postgres_url().encode()).hexdigest()[:16]


def _load_points(path: Path | None, key: str) -> dict[int, ChainPoint]:
    if path is None:
        return {}
    try:
        saved = orjson.loads(path.read_bytes()).get(key, {})
        return {int(p): ChainPoint(int(v[0]), str(v[1])) for p, v in saved.items()}
    except (OSError, ValueError, TypeError, AttributeError, IndexError):
        return {}  # none yet, or unreadable: walk everything


def _save_points(path: Path | None, key: str, points: dict[int, ChainPoint]) -> None:
    if path is None:
        return
    try:
        data = orjson.loads(path.read_bytes())
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data[key] = {str(p): [pt.seq, pt.hash] for p, pt in sorted(points.items())}
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        print(f"verify: cannot remember the verified prefixes in {path}: {exc}", file=sys.stderr)


async def _verify(
    settings: StorageSettings, full: bool = True, checkpoints: Path | None = None
) -> int:
    key = _storage_key(settings)
    points = {} if full else _load_points(checkpoints, key)
    store = create_store(settings)
    await store.open()
    broken = 0
    try:
        for partition in range(settings.partitions):
            start = points.get(partition)
            status = await store.verify_chain(partition, after=start)
            if status.ok:
                resumed = "" if start is None else f" ({status.checked - start.seq} new)"
                print(f"partition {partition}: ok, {status.checked} events{resumed}")
                points[partition] = ChainPoint(status.checked, status.last_hash)
            else:
                broken += 1
                print(
                    f"partition {partition}: BROKEN at seq {status.broken_at_seq} "
                    f"(event {status.broken_event_id}): {status.reason}"
                )
    finally:
        await store.close()
    _save_points(checkpoints, key, points)
    return 1 if broken else 0


def verify_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="leviathan-cp verify",
        description="Check every partition's hash chain in the configured storage: the events "
        "after the prefix the last run verified, or with --full all of them.",
    )
    parser.add_argument("--full", action="store_true", help="walk every chain from its first event")
    args = parser.parse_args(argv)
    devstate.apply("verify")
    settings = settings_or_none()
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
    checkpoints = Path.home() / ".leviathan" / CHECKPOINTS
    try:
        return asyncio.run(_verify(settings, args.full, checkpoints))
    except (OSError, StorageError) as exc:
        print(f"verify: storage unavailable: {exc}", file=sys.stderr)
        return 2
