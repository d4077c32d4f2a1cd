"""``leviathan-cp dlq list|replay|drop``: the dead-letter admin command.

Pipeline position: operator tool over the partitions' dead streams ``{prefix}:dead:{p}``
(filled by consumer.deadletter) and the single ``{prefix}:dead`` stream of earlier
releases, whose entries stay listable, replayable and droppable. ``list`` prints one line
per dead entry: its handle (``P/ID`` for partition P's dead stream, ``legacy/ID`` for the
old stream), the partition it came from, its original entry id, the reason and what it
holds (``bundle B chunk c/n event i (event_id)`` for one event storage refused out of an
entry whose other events were stored; replaying it re-queues just that event).
``replay`` and ``drop`` take those handles; a bare ``ID`` is accepted when only one dead
stream holds it.

Replay XADDs an entry's original envelope back to its partition stream and XDELs it from
the dead stream. For a partition's dead stream both run in one MULTI (same slot); for the
old stream the XADD comes first, so a crash in between duplicates (harmless: storage
dedups) rather than loses. Conflict records of earlier releases hold a single rejected
event, not an envelope, and are kept (drop them explicitly once handled).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError

from consumer import deadletter
from storage.queue import StreamLayout, id_key, resolve
from storage.redisconn import atomic

if TYPE_CHECKING:
    from storage.config import StorageSettings

HANDLE = re.compile(r"(?:([0-9]+|legacy)/)?([0-9]+-[0-9]+)")
LEGACY = "legacy"


class DlqError(ValueError):
    """A handle that names no dead stream or more than one entry; one line for the operator."""


@dataclass(frozen=True, slots=True)
class DeadEntry:
    stream: str
    label: str  # the partition number, or "legacy"
    dead_id: str
    fields: dict[bytes, bytes]

    @property
    def handle(self) -> str:
        return f"{self.label}/{self.dead_id}"


@dataclass
class ReplayResult:
    replayed: int = 0
    skipped: list[str] = field(default_factory=list)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def dead_streams(layout: StreamLayout) -> list[tuple[str, str]]:
    """``(label, key)`` of every dead stream: each partition's, then the old single one."""
    return [(str(p), layout.dead_stream(p)) for p in range(layout.partitions)] + [
        (LEGACY, layout.legacy_dead)
    ]


async def _range(
    redis: Redis, label: str, stream: str, lo: str = "-", hi: str = "+", count: int | None = None
) -> list[DeadEntry]:
    rows = await resolve(redis.xrange(stream, min=lo, max=hi, count=count))
    return [DeadEntry(stream, label, _s(i), f) for i, f in rows]


async def _select(
    redis: Redis, layout: StreamLayout, handles: Sequence[str] | None
) -> list[DeadEntry]:
    streams = dead_streams(layout)
    if handles is None:
        return [e for label, key in streams for e in await _range(redis, label, key)]
    by_label = dict(streams)
    out: list[DeadEntry] = []
    for handle in handles:
        match = HANDLE.fullmatch(handle)
        if match is None:
            raise DlqError(f"not a dead-entry handle (like 3/1732800000000-0): {handle!r}")
        label, dead_id = match.group(1), match.group(2)
        if label is not None and label not in by_label:
            raise DlqError(f"{handle}: no partition {label} (LEVIATHAN_PARTITIONS)")
        candidates = [(label, by_label[label])] if label is not None else streams
        found = [
            e for lb, key in candidates for e in await _range(redis, lb, key, dead_id, dead_id)
        ]
        if len(found) > 1:
            where = ", ".join(e.handle for e in found)
            raise DlqError(f"{dead_id} is in several dead streams ({where}); give the handle")
        out.extend(found)
    return out


def _put_back(layout: StreamLayout, partition: int, entry: DeadEntry) -> Callable[[Pipeline], None]:
    original = {k: v for k, v in entry.fields.items() if not k.startswith(deadletter.META_PREFIX)}

    def fill(pipe: Pipeline) -> None:
        pipe.xadd(layout.stream(partition), original)  # type: ignore[arg-type]
        pipe.xdel(entry.stream, entry.dead_id)

    return fill


async def replay(redis: Redis, layout: StreamLayout, handles: Sequence[str] | None) -> ReplayResult:
    """Put dead entries (all, or the given handles) back on their partition streams."""
    result = ReplayResult()
    for entry in await _select(redis, layout, handles):
        fields = entry.fields
        source = _s(fields.get(deadletter.PARTITION, b"-1"))
        partition = int(entry.label) if entry.label != LEGACY else int(source or -1)
        if fields.get(deadletter.REASON) == b"conflict" or not 0 <= partition < layout.partitions:
            result.skipped.append(entry.handle)
            continue
        original = {k: v for k, v in fields.items() if not k.startswith(deadletter.META_PREFIX)}
        if entry.label == LEGACY:
            await resolve(redis.xadd(layout.stream(partition), original))  # type: ignore[arg-type]
            await resolve(redis.xdel(entry.stream, entry.dead_id))
        else:
            # the dead stream shares its partition's hash tag: one slot, one MULTI
            await atomic(redis, layout.stream(partition), _put_back(layout, partition, entry))
        result.replayed += 1
    return result


async def drop(redis: Redis, layout: StreamLayout, handles: Sequence[str] | None) -> int:
    dropped = 0
    for entry in await _select(redis, layout, handles):
        dropped += int(await resolve(redis.xdel(entry.stream, entry.dead_id)))
    return dropped


async def count(redis: Redis, layout: StreamLayout) -> int:
    """Dead entries over every dead stream."""
    return sum([int(await resolve(redis.xlen(key))) for _, key in dead_streams(layout)], start=0)


async def listing(redis: Redis, layout: StreamLayout, limit: int) -> list[str]:
    """The oldest ``limit`` dead entries over all dead streams, one tab-separated line each."""
    entries = [
        e
        for label, key in dead_streams(layout)
        for e in await _range(redis, label, key, count=limit)
    ]
    entries.sort(key=lambda e: id_key(e.dead_id))
    lines = []
    for e in entries[:limit]:
        f = e.fields
        lines.append(
            "\t".join(
                [
                    e.handle,
                    _s(f.get(deadletter.PARTITION, b"?")),
                    _s(f.get(deadletter.ENTRY_ID, b"?")),
                    _s(f.get(deadletter.REASON, b"?")),
                    origin(f),
                ]
            )
        )
    return lines


def origin(fields: dict[bytes, bytes]) -> str:
    """What a dead entry holds: ``bundle B chunk c/n event i (id)`` for one event of an
    entry whose other events were stored, ``… artifacts`` for its artifacts, ``bundle B
    chunk c/n`` for a whole entry refused by storage, ``entry`` for older letters."""
    if deadletter.BUNDLE_ID not in fields:
        return "entry"
    out = (
        f"bundle {_s(fields[deadletter.BUNDLE_ID])} chunk {_s(fields.get(deadletter.CHUNK, b'?'))}"
    )
    event = fields.get(deadletter.EVENT)
    if event == b"artifacts":
        return out + " artifacts"
    if event is not None:
        out += f" event {_s(event)}"
    if deadletter.EVENT_ID in fields:
        out += f" ({_s(fields[deadletter.EVENT_ID])})"
    return out


def _handle(text: str) -> str:
    """A handle as ``list`` prints it, refused before Redis is asked."""
    if not HANDLE.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"not a dead-entry handle (like 3/1732800000000-0 or 1732800000000-0): {text!r}"
        )
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="leviathan-cp dlq",
        description="List, replay or drop the stream entries the consumers dead-lettered.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser(
        "list",
        help="show dead entries: handle (partition/id), partition, entry id, reason, what it holds",
    )
    ls.add_argument("--limit", type=_positive, default=100)
    for name in ("replay", "drop"):
        sp = sub.add_parser(
            name, help=f"{name} the given dead entries (handles from list) or --all"
        )
        sp.add_argument("ids", nargs="*", type=_handle, metavar="handle")
        sp.add_argument("--all", action="store_true")
    return p


async def _run(args: argparse.Namespace, settings: StorageSettings) -> int:
    redis, layout = settings.stream_redis(), settings.layout
    try:
        if args.cmd == "list":
            lines = await listing(redis, layout, args.limit)
            print("\n".join(lines) if lines else "no dead letters (every dead stream is empty)")
            return 0
        ids = None if args.all else list(args.ids)
        if args.cmd == "replay":
            r = await replay(redis, layout, ids)
            print(f"replayed {r.replayed}; skipped {len(r.skipped)} (conflict records)")
        else:
            print(f"dropped {await drop(redis, layout, ids)}")
        return 0
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None, prepare: Callable[[], object] | None = None) -> int:
    """``prepare`` runs once the arguments are parsed (``--help`` exits before it)."""
    from pydantic import ValidationError

    from consumer.settings import ConsumerSettings
    from storage.config import settings_error_line

    args = _parser().parse_args(argv)
    if prepare is not None:
        prepare()
    if args.cmd in ("replay", "drop") and not args.all and not args.ids:
        print("give dead-entry handles or --all", file=sys.stderr)
        return 2
    try:
        settings = ConsumerSettings()
    except ValidationError as exc:
        print(settings_error_line(exc), file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, settings))
    except DlqError as exc:
        print(f"dlq: {exc}", file=sys.stderr)
        return 2
    except ResponseError as exc:
        print(f"Redis refused the command: {exc}", file=sys.stderr)
        return 1
    except (OSError, RedisError) as exc:
        print(f"cannot reach Redis: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
