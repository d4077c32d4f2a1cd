"""``python -m ingest``: build settings once, serve the ingest app, drain on SIGTERM.

Pipeline position: process entry point of the ingest tier. ``leviathan-cp ingest`` runs
this with the query tier's read API mounted (``read_api``); ``python -m ingest`` alone
serves the write endpoints only. The arguments are parsed first, so ``--help`` needs no
configuration; bad settings print one line naming the variable and exit 2; start-up
refusals and the SIGTERM drain are :mod:`webcore.serve`'s.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from ingest.app import HANDLER_ARGS, RUNTIME_KEY, ReadApi, create_app, tune_malloc
from ingest.settings import IngestSettings
from storage.config import settings_error_line
from webcore.serve import run, serve


def main(argv: list[str] | None = None, read_api: ReadApi | None = None) -> int:
    reads = (
        "serve the read API and the operator console beside it (unless "
        "LEVIATHAN_INGEST_SERVE_READS=false)"
        if read_api is not None
        else "writes only (leviathan-cp ingest also serves the read API)"
    )
    argparse.ArgumentParser(
        prog="leviathan-cp ingest" if read_api is not None else "python -m ingest",
        description="Run the HTTP ingest tier: accept event bundles and queue them in the "
        f"Redis streams; {reads}. Configured by environment variables "
        "(docs/operations.md); needs a bearer token "
        "(LEVIATHAN_CONTROL_PLANE_TOKEN, _TOKENS or _TOKEN_FILE).",
    ).parse_args(argv)
    try:
        settings = IngestSettings()
    except ValidationError as exc:
        print(settings_error_line(exc), file=sys.stderr)
        return 2
    app = create_app(settings, read_api=read_api)
    rt = app[RUNTIME_KEY]

    def drain() -> None:
        rt.draining = True

    return run(
        serve(
            app,
            settings,
            "ingest",
            on_drain=drain,
            after_start=tune_malloc,
            runner_args=HANDLER_ARGS,
        )
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
