"""NDJSON partition files of the NDJSON backend: line codec, segments, append, recovery.

Pipeline position: the bottom of the consumer's write path for the dev backend. Each
partition is an append-only log whose lines are complete stored events (hash chain
included), so the files alone prove what was stored. Appends open the file in append
mode and never read it (O(1) whatever its size); recovery reads only the bytes past the
size the index last recorded.

Segments: a partition's log is a run of files, each named after the byte position in the
whole log where it starts — ``events-{p:04d}.ndjson`` starts at 0 (a store made before
segments is that one file and keeps working unchanged), ``events-{p:04d}.{base:016d}.ndjson``
at ``base``. Offsets in the index are positions in the whole log, so a reader finds the
file by the offset, and retention deletes whole files that lie before its checkpoint. The
file with the greatest base is the one appended to; the writer starts a new one once it
has :data:`SEGMENT_BYTES`.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, cast

import orjson

from storage.base import StorageCorrupt, StoredEvent
from storage.schema import format_timestamp

# what every stored line holds; ``revision`` came later (lines without it are revision 1)
# and the digest lives in the index, not in the line
_FIELDS = tuple(f.name for f in fields(StoredEvent) if f.name not in ("revision", "digest"))
_VALUES = itemgetter(*_FIELDS)  # in StoredEvent's field order: its positional arguments
# what _VALUES gives, for the type checker (it cannot count an itemgetter's results)
_Values = tuple[str, str, str, str | None, dict[str, Any], str, str, str, int, int, str, str]


def partition_path(directory: Path, partition: int) -> Path:
    return directory / f"events-{partition:04d}.ndjson"


def partition_of_path(path: Path) -> int | None:
    """The partition a log file (any segment) belongs to, or None for another file."""
    stem = path.name.removeprefix("events-").removesuffix(".ndjson").split(".")[0]
    return int(stem) if stem.isdigit() and path.name.startswith("events-") else None


# a new segment once the one appended to holds this much (retention frees whole files)
SEGMENT_BYTES = 64 * 1024 * 1024


def segment_path(directory: Path, partition: int, base: int) -> Path:
    if base == 0:
        return partition_path(directory, partition)
    return directory / f"events-{partition:04d}.{base:016d}.ndjson"


def segments(directory: Path, partition: int) -> list[tuple[int, Path]]:
    """``(base, path)`` of each segment of ``partition`` on disk, in log order."""
    found = []
    for path in directory.glob(f"events-{partition:04d}*.ndjson"):
        parts = path.name.removesuffix(".ndjson").split(".")
        if parts[0] != f"events-{partition:04d}":
            continue
        if len(parts) == 1:
            found.append((0, path))
        elif len(parts) == 2 and parts[1].isdigit():
            found.append((int(parts[1]), path))
    return sorted(found)


def active(directory: Path, partition: int) -> tuple[int, Path]:
    """The segment appended to: the one with the greatest base (the first if none yet)."""
    found = segments(directory, partition)
    return found[-1] if found else (0, partition_path(directory, partition))


class Segments:
    """Reads lines at whole-log offsets of one partition, each segment opened once."""

    def __init__(self, directory: Path, partition: int) -> None:
        found = segments(directory, partition)
        self._bases = [b for b, _ in found]
        self._paths = [p for _, p in found]
        self._files: dict[int, Any] = {}

    def locate(self, offset: int) -> tuple[int, Path] | None:
        i = bisect.bisect_right(self._bases, offset) - 1
        return None if i < 0 else (self._bases[i], self._paths[i])

    def read(self, offset: int, length: int) -> bytes:
        where = self.locate(offset)
        if where is None:
            raise FileNotFoundError(f"no segment holds offset {offset}")
        base, path = where
        fh = self._files.get(base)
        if fh is None:
            fh = self._files[base] = open(path, "rb")  # noqa: SIM115 (closed in close())
        fh.seek(offset - base)
        data: bytes = fh.read(length)
        return data

    def lines_from(self, offset: int) -> Iterator[bytes]:
        """Every line from whole-log ``offset`` on, across segments."""
        for base, path in zip(self._bases, self._paths, strict=True):
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if base + size <= offset:
                continue
            with open(path, "rb") as fh:
                fh.seek(max(0, offset - base))
                yield from fh

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files.clear()

    def __enter__(self) -> Segments:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    try:
        values = cast(_Values, _VALUES(data))
    except KeyError:
        missing = [name for name in _FIELDS if name not in data]
        raise ValueError(f"line lacks {', '.join(missing)}") from None
    revision = data.get("revision", 1)
    if type(revision) is not int or revision < 1:
        raise ValueError("line has an invalid revision")
    return StoredEvent(*values, revision=revision, digest=digest)


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
