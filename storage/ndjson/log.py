"""NDJSON partition files of the NDJSON backend: line codec, append, tail recovery.

Pipeline position: the bottom of the consumer's write path for the dev backend. Each
partition is one append-only file ``events-{p:04d}.ndjson`` whose lines are complete
stored events (hash chain included), so the files alone prove what was stored. Appends
open the file in append mode and never read it (O(1) whatever its size); recovery reads
only the bytes past the size the index last recorded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from storage.base import StorageCorrupt, StoredEvent
from storage.schema import format_timestamp

# what every stored line holds; ``revision`` came later (lines without it are revision 1)
# and the digest lives in the index, not in the line
_FIELDS = tuple(f.name for f in fields(StoredEvent) if f.name not in ("revision", "digest"))


def partition_path(directory: Path, partition: int) -> Path:
    return directory / f"events-{partition:04d}.ndjson"


def partition_of_path(path: Path) -> int | None:
    stem = path.name.removeprefix("events-").removesuffix(".ndjson")
    return int(stem) if stem.isdigit() and path.name.startswith("events-") else None


def received_at_text(epoch: float) -> str:
    return format_timestamp(datetime.fromtimestamp(epoch, UTC))


def encode_line(
    event_id: str,
    event_type: str,
    timestamp: str,
    actor_id: str | None,
    payload: orjson.Fragment,
    bundle_id: str,
    target: str,
    received_at: str,
    partition: int,
    seq: int,
    prev_hash: str,
    hash_: str,
    revision: int,
) -> bytes:
    """One stored line: the fields of :class:`StoredEvent` in its order, newline-ended.

    The payload goes in as the bytes the chain hashed (sorted keys), not serialised again.
    """
    return orjson.dumps(
        {
            "event_id": event_id,
            "event_type": event_type,
            "timestamp": timestamp,
            "actor_id": actor_id,
            "payload": payload,
            "bundle_id": bundle_id,
            "target": target,
            "received_at": received_at,
            "partition": partition,
            "seq": seq,
            "prev_hash": prev_hash,
            "hash": hash_,
            "revision": revision,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def decode_line(line: bytes, digest: str = "") -> StoredEvent:
    """Parse one stored line (``digest`` from the index, when the caller has it); raises
    ``ValueError`` naming what is wrong."""
    data: Any = orjson.loads(line)
    if not isinstance(data, dict):
        raise ValueError("line is not a JSON object")
    missing = [name for name in _FIELDS if name not in data]
    if missing:
        raise ValueError(f"line lacks {', '.join(missing)}")
    revision = data.get("revision", 1)
    if type(revision) is not int or revision < 1:
        raise ValueError("line has an invalid revision")
    return StoredEvent(**{name: data[name] for name in _FIELDS}, revision=revision, digest=digest)


def append(path: Path, data: bytes) -> tuple[int, int]:
    """Append ``data`` and fsync once; returns (size before, size after)."""
    with open(path, "ab") as fh:
        start = fh.tell()
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
        return start, start + len(data)


def truncate(path: Path, size: int) -> None:
    """Undo a partial append (the index never recorded it)."""
    with open(path, "r+b") as fh:
        fh.truncate(size)
        fh.flush()
        os.fsync(fh.fileno())


def tail(path: Path, indexed_size: int) -> Iterator[tuple[int, bytes]]:
    """Complete lines past ``indexed_size`` (crash between append and index commit).

    A torn last line (no trailing newline: the process died mid-write, before its fsync
    returned, so that batch was never acknowledged) is cut off the file.
    """
    size = path.stat().st_size
    if size < indexed_size:
        raise StorageCorrupt(f"{path.name} is shorter ({size}) than indexed ({indexed_size})")
    if size == indexed_size:
        return
    with open(path, "rb") as fh:
        fh.seek(indexed_size)
        data = fh.read()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        truncate(path, indexed_size + complete)
    offset = indexed_size
    for line in data[:complete].splitlines(keepends=True):
        yield offset, line
        offset += len(line)


def iter_lines(path: Path) -> Iterator[bytes]:
    if not path.exists():
        return
    with open(path, "rb") as fh:
        yield from fh
