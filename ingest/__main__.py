"""``python -m ingest``: build settings once, serve the ingest app, drain on SIGTERM.

Pipeline position: process entry point of the ingest tier. ``leviathan-cp ingest`` runs
this with the query tier's read API mounted (``read_api``); ``python -m ingest`` alone
serves the write endpoints only. Bad settings print one line naming the variable and exit
2; start-up refusals and the SIGTERM drain are :mod:`webcore.serve`'s.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from ingest.app import HANDLER_ARGS, RUNTIME_KEY, ReadApi, create_app, tune_gc
from ingest.settings import IngestSettings
from storage.config import settings_error_line
from webcore.serve import run, serve


def main(argv: list[str] | None = None, read_api: ReadApi | None = None) -> int:
    del argv  # configuration comes from the environment (docs/operations.md, "Configuration")
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
            after_start=tune_gc,  # what exists by then lives as long as the process
            runner_args=HANDLER_ARGS,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
