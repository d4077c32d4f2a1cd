"""``leviathan-cp``: the one console script that starts every part of the control plane.

Pipeline position: above the tiers. Each subcommand imports its target lazily so that
``leviathan-cp consumer`` never loads aiohttp's app code and ``leviathan-cp ingest`` never
loads arq; the tiers themselves still never import each other (import-linter contract).

A subcommand is one :class:`Command` in :data:`COMMANDS` (its name, the line ``--help``
shows, the function it runs); the usage text is built from that table. Every subcommand
parses its arguments before it reads any configuration or prints anything else, so
``leviathan-cp <command> --help`` works in an empty environment.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

DISTRIBUTION = "leviathan-control-plane"


@dataclass(frozen=True, slots=True)
class Command:
    summary: str
    run: Callable[[list[str]], int]


def _ingest(argv: list[str]) -> int:
    from leviathan_cp.tiers import ingest_main

    return ingest_main(argv)


def _query(argv: list[str]) -> int:
    from leviathan_cp.tiers import query_main

    return query_main(argv)


def _consumer(argv: list[str]) -> int:
    from consumer.__main__ import main

    return int(main(argv) or 0)


def _forward(argv: list[str]) -> int:
    from consumer.forwarder.main import main
    from leviathan_cp import devstate

    return main(argv, prepare=lambda: devstate.apply("forward"))


def _dlq(argv: list[str]) -> int:
    from consumer.dlq import main
    from leviathan_cp import devstate

    return int(main(argv, prepare=lambda: devstate.apply("dlq")) or 0)


def _dev(argv: list[str]) -> int:
    from leviathan_cp.dev import main

    return main(argv)


def _bench(argv: list[str]) -> int:
    from leviathan_cp.loadgen import main

    return int(main(argv) or 0)


def _migrate(argv: list[str]) -> int:
    from leviathan_cp.admin import migrate_main

    return migrate_main(argv)


def _verify(argv: list[str]) -> int:
    from leviathan_cp.admin import verify_main

    return verify_main(argv)


def _export(argv: list[str]) -> int:
    from leviathan_cp.lifecycle import export_main

    return export_main(argv)


def _import(argv: list[str]) -> int:
    from leviathan_cp.lifecycle import import_main

    return import_main(argv)


def _retain(argv: list[str]) -> int:
    from leviathan_cp.lifecycle import retain_main

    return retain_main(argv)


COMMANDS: dict[str, Command] = {
    "ingest": Command("run the HTTP ingest tier (and the read API beside it by default)", _ingest),
    "query": Command("run the read tier alone: read API, console, /openapi.json", _query),
    "consumer": Command("run the stream consumer (writes batches to storage)", _consumer),
    "forward": Command("forward every accepted bundle to Spider (LEVIATHAN_SPIDER_URL)", _forward),
    "dev": Command("run ingest + consumer locally on embedded defaults", _dev),
    "migrate": Command("apply PostgreSQL migrations (POSTGRES_DSN or POSTGRES_*)", _migrate),
    "verify": Command(
        "check every partition's hash chain (--full: from the start); exit 1 if broken", _verify
    ),
    "export": Command("write every stored event (every revision) as NDJSON", _export),
    "import": Command(
        "store events from an export or the original control plane's stores", _import
    ),
    "retain": Command(
        "remove the events that arrived before a date (chains keep a checkpoint)", _retain
    ),
    "dlq": Command("list / replay / drop dead-lettered stream entries", _dlq),
    "bench": Command("load generator against a running ingest tier", _bench),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS) + 2
    lines = [f"  {name:<{width}} {cmd.summary}" for name, cmd in COMMANDS.items()]
    return (
        "usage: leviathan-cp <command> [args]\n"
        "       leviathan-cp <command> --help | leviathan-cp --version\n\n"
        "commands:\n" + "\n".join(lines) + "\n"
    )


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage(), end="")
        return 0 if args else 2
    if args[0] in {"-V", "--version"}:
        print(f"leviathan-cp {version()}")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"leviathan-cp: unknown command {args[0]!r}\n{usage()}", end="", file=sys.stderr)
        return 2
    try:
        return command.run(args[1:])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
