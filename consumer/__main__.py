"""``python -m consumer`` / ``leviathan-cp consumer``: start the consumer process.

Pipeline position: the entry point. Builds the one :class:`ConsumerSettings` object (a bad
setting prints one line naming the variable and exits 2, no traceback) and hands it to the
arq worker in consumer.worker. ``--check`` exits 0 when this consumer's health key is fresh.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from consumer.settings import ConsumerSettings
from storage.config import settings_error_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="leviathan-cp consumer",
        description="Run the stream consumer: read the partition streams, write each batch to "
        "storage, acknowledge it. Configured by environment variables (docs/operations.md).",
    )
    parser.add_argument("--check", action="store_true", help="exit 0 if the worker is healthy")
    args = parser.parse_args(argv)
    try:
        settings = ConsumerSettings()
    except ValidationError as exc:
        print(settings_error_line(exc), file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    from consumer import worker  # arq is imported only when the process really runs

    if args.check:
        return worker.check(settings)
    return worker.run(settings)


if __name__ == "__main__":
    sys.exit(main())
