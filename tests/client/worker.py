"""A worker process for the client's stack tests: ``python -m tests.client.worker``.

``send URL SPOOL N PREFIX`` sends N bundles through a spooled Client and closes it within a
second (the control plane may be down); ``flush URL SPOOL`` starts a Client on the same
spool and waits for everything it adopted. Each prints its Client's stats as JSON and exits
0 when nothing was left.

The bundles come from :func:`make_bundle`, whose events have stable ids (``key=``), so the
test can compute the expected ids without talking to the process.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from typing import Any

from leviathan_client import Client, events

TOKEN = "client-e2e-token-0123456789"
EVENTS_PER_BUNDLE = 3


def make_bundle(prefix: str, i: int) -> dict[str, Any]:
    attempt, task = f"{prefix}-att-{i}", f"{prefix}-task-{i}"
    return events.bundle(
        prefix,
        [
            events.attempt_created(attempt, task_id=task, key=f"{attempt}/created"),
            events.attempt_started(attempt, task_id=task, key=f"{attempt}/started"),
            events.attempt_succeeded(attempt, task_id=task, key=f"{attempt}/succeeded"),
        ],
        bundle_id=f"{prefix}-{i}",
    ).to_dict()


def expected_ids(prefix: str, n: int) -> set[str]:
    return {e["event_id"] for i in range(n) for e in make_bundle(prefix, i)["events"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=["send", "flush"])
    p.add_argument("url")
    p.add_argument("spool")
    p.add_argument("count", type=int, nargs="?", default=0)
    p.add_argument("prefix", nargs="?", default="spool")
    args = p.parse_args(argv)
    client = Client(args.url, TOKEN, spool_dir=args.spool, timeout=2)
    if args.action == "send":
        for i in range(args.count):
            client.send(make_bundle(args.prefix, i))
        clean = client.close(timeout=1)
    else:
        clean = client.flush(120)
        client.close(timeout=1)
    print(json.dumps(asdict(client.stats)))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
