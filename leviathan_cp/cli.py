"""``leviathan-cp``: the one console script that starts every part of the control plane.

Pipeline position: above both tiers. Each subcommand imports its target lazily so that
``leviathan-cp consumer`` never loads aiohttp's app code and ``leviathan-cp ingest`` never
loads arq; the tiers themselves still never import each other (import-linter contract).
"""

from __future__ import annotations

import sys
from collections.abc import Callable

USAGE = """usage: leviathan-cp <command> [args]

commands:
  ingest     run the HTTP ingest + query tier
  consumer   run the stream consumer (writes batches to storage)
  forward    forward every accepted bundle to Spider (LEVIATHAN_SPIDER_URL)
  dev        run ingest + consumer locally on embedded defaults
  migrate    apply PostgreSQL migrations (POSTGRES_DSN or POSTGRES_*)
  verify     check every partition's hash chain (--full: from the start); exit 1 if broken
  export     write every stored event (every revision) as NDJSON
  import     store events from an export or the original control plane's stores
  retain     remove the events that arrived before a date (chains keep a checkpoint)
  dlq        list / replay / drop dead-lettered stream entries
  bench      load generator against a running ingest tier
"""


def _ingest(argv: list[str]) -> int:
    from ingest.__main__ import main

    return int(main(argv) or 0)


def _consumer(argv: list[str]) -> int:
    from consumer.__main__ import main

    return int(main(argv) or 0)


def _forward(argv: list[str]) -> int:
    from consumer.forwarder_main import main
    from leviathan_cp import devstate

    devstate.apply("forward")
    return main(argv)


def _dlq(argv: list[str]) -> int:
    from consumer.dlq import main
    from leviathan_cp import devstate

    devstate.apply("dlq")
    return int(main(argv) or 0)


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


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "ingest": _ingest,
    "consumer": _consumer,
    "forward": _forward,
    "dev": _dev,
    "migrate": _migrate,
    "verify": _verify,
    "export": _export,
    "import": _import,
    "retain": _retain,
    "dlq": _dlq,
    "bench": _bench,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE, end="")
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"leviathan-cp: unknown command {args[0]!r}\n{USAGE}", end="", file=sys.stderr)
        return 2
    try:
        return command(args[1:])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
