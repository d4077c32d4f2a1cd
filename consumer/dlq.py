"""``leviathan-cp dlq list|replay|drop``: the dead-letter admin command (DESIGN §3).

Pipeline position: operator tool over ``{prefix}:dead`` (filled by consumer.deadletter).
Replay XADDs an entry's original envelope back to its partition stream and only then
XDELs it from the dead stream, so a crash in between duplicates (harmless: storage
dedups) rather than loses. Conflict records hold a single rejected event, not an
envelope, and are kept (drop them explicitly once handled).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from consumer import deadletter
from storage.queue import StreamLayout, resolve

ENTRY_ID = re.compile(r"[0-9]+-[0-9]+")


@dataclass
class ReplayResult:
    replayed: int = 0
    skipped: list[str] = field(default_factory=list)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _select(
    redis: Redis, layout: StreamLayout, ids: Sequence[str] | None
) -> list[tuple[str, dict[bytes, bytes]]]:
    if ids is None:
        rows = await resolve(redis.xrange(layout.dead))
    else:
        rows = []
        for i in ids:
            rows.extend(await resolve(redis.xrange(layout.dead, min=i, max=i)))
    return [(_s(i), f) for i, f in rows]


async def replay(redis: Redis, layout: StreamLayout, ids: Sequence[str] | None) -> ReplayResult:
    """Put dead entries (all, or the given dead-stream ids) back on their streams."""
    result = ReplayResult()
    for dead_id, fields in await _select(redis, layout, ids):
        partition = int(fields.get(deadletter.PARTITION, b"-1"))
        if fields.get(deadletter.REASON) == b"conflict" or not 0 <= partition < layout.partitions:
            result.skipped.append(dead_id)
            continue
        original = {k: v for k, v in fields.items() if not k.startswith(deadletter.META_PREFIX)}
        await resolve(redis.xadd(layout.stream(partition), original))  # type: ignore[arg-type]
        await resolve(redis.xdel(layout.dead, dead_id))
        result.replayed += 1
    return result


async def drop(redis: Redis, layout: StreamLayout, ids: Sequence[str] | None) -> int:
    chosen = [i for i, _ in await _select(redis, layout, ids)]
    if not chosen:
        return 0
    return int(await resolve(redis.xdel(layout.dead, *chosen)))


async def listing(redis: Redis, layout: StreamLayout, limit: int) -> list[str]:
    rows = await resolve(redis.xrange(layout.dead, count=limit))
    lines = []
    for dead_id, f in rows:
        lines.append(
            "\t".join(
                [
                    _s(dead_id),
                    _s(f.get(deadletter.PARTITION, b"?")),
                    _s(f.get(deadletter.ENTRY_ID, b"?")),
                    _s(f.get(deadletter.REASON, b"?")),
                ]
            )
        )
    return lines


def _entry_id(text: str) -> str:
    """A dead-stream id as ``list`` prints it (``<ms>-<seq>``), refused before Redis is asked."""
    if not ENTRY_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a stream entry id (like 1732800000000-0): {text!r}")
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="leviathan-cp dlq", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="show dead entries: id, partition, entry id, reason")
    ls.add_argument("--limit", type=_positive, default=100)
    for name in ("replay", "drop"):
        sp = sub.add_parser(name, help=f"{name} the given dead-stream ids (or --all)")
        sp.add_argument("ids", nargs="*", type=_entry_id)
        sp.add_argument("--all", action="store_true")
    return p


async def _run(args: argparse.Namespace, redis_url: str, layout: StreamLayout) -> int:
    redis = Redis.from_url(redis_url)
    try:
        if args.cmd == "list":
            lines = await listing(redis, layout, args.limit)
            print("\n".join(lines) if lines else f"no dead letters ({layout.dead} is empty)")
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


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from consumer.settings import ConsumerSettings
    from storage.config import settings_error_line

    args = _parser().parse_args(argv)
    if args.cmd in ("replay", "drop") and not args.all and not args.ids:
        print("give dead-stream ids or --all", file=sys.stderr)
        return 2
    try:
        settings = ConsumerSettings()
    except ValidationError as exc:
        print(settings_error_line(exc), file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, settings.redis_url, settings.layout))
    except ResponseError as exc:
        print(f"Redis refused the command: {exc}", file=sys.stderr)
        return 1
    except (OSError, RedisError) as exc:
        print(f"cannot reach Redis: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
