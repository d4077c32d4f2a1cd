"""``python -m query`` / ``leviathan-cp query``: the read tier as its own process.

Pipeline position: process entry point of the query tier (the read API, the console and
``/openapi.json``, reading storage only). The arguments are parsed first, so ``--help``
needs no configuration; bad settings print one line naming the variable and exit 2;
start-up refusals and the SIGTERM drain are :mod:`webcore.serve`'s.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from query.app import DRAINING_KEY, create_app
from query.settings import QuerySettings
from storage.config import settings_error_line
from webcore.serve import run, serve


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="leviathan-cp query",
        description="Run the read tier on its own: the read API, the operator console and "
        "/openapi.json, reading storage (and the Redis streams' counters for /v1/stats); no "
        "write endpoints. Configured by the same environment variables as ingest "
        "(docs/operations.md); needs a bearer token "
        "(LEVIATHAN_CONTROL_PLANE_TOKEN, _TOKENS or _TOKEN_FILE).",
    ).parse_args(argv)
    try:
        settings = QuerySettings()
    except ValidationError as exc:
        print(settings_error_line(exc), file=sys.stderr)
        return 2
    app = create_app(settings)
    draining = app[DRAINING_KEY]
    return run(serve(app, settings, "query", on_drain=draining.set))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
