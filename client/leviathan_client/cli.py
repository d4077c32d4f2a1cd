"""``leviathan-client``: post bundles from files or stdin; inspect and flush a spool.

Pipeline position: a shell front end over :class:`leviathan_client.Client`.

- ``leviathan-client post FILE… [--wait S]``: each file (``-`` or none: stdin) holds one
  bundle, a JSON array of bundles, or one bundle per line (NDJSON). Prints one answer per
  bundle; exit 1 when any was refused or could not be delivered.
- ``leviathan-client spool status DIR``: pending bundles and bytes per sub-folder, rejected ones.
- ``leviathan-client spool flush DIR``: adopts every sub-folder no running client holds and
  posts it; exit 1 when something is left.

URL and token: ``--url``/``--token``, else ``LEVIATHAN_URL`` and
``LEVIATHAN_CONTROL_PLANE_TOKEN``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from leviathan_client.client import Client
from leviathan_client.errors import ClientError
from leviathan_client.spool import PREFIX, REJECTED, pending_files


def _bundles(text: str, source: str) -> Iterator[dict[str, Any]]:
    text = text.strip()
    if not text:
        return
    try:
        doc = json.loads(text)
    except ValueError:
        try:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise SystemExit(f"leviathan-client: {source}: not JSON nor NDJSON ({exc})") from None
        yield from docs
        return
    if isinstance(doc, list):
        yield from doc
    else:
        yield doc


def _read(files: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name in files or ["-"]:
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
        except OSError as exc:
            raise SystemExit(f"leviathan-client: {name}: {exc.strerror}") from None
        for raw in _bundles(text, name):
            yield name, raw


def _client(args: argparse.Namespace, spool: Path | None = None) -> Client:
    url = args.url or os.environ.get("LEVIATHAN_URL")
    token = args.token or os.environ.get("LEVIATHAN_CONTROL_PLANE_TOKEN")
    if not url or not token:
        raise SystemExit("leviathan-client: give --url and --token (or LEVIATHAN_URL and "
                         "LEVIATHAN_CONTROL_PLANE_TOKEN)")  # fmt: skip
    return Client(url, token, spool_dir=spool, timeout=args.timeout)


def _post(args: argparse.Namespace) -> int:
    failed = 0
    with _client(args) as client:
        for name, raw in _read(args.files):
            try:
                answer = client.post(raw, wait=args.wait, deadline=args.deadline)
            except ClientError as exc:
                print(f"{name}: {type(exc).__name__}: {exc}")
                failed += 1
                continue
            print(json.dumps({"file": name, "http": answer.status, "answer": answer.body}))
            failed += not answer.ok
    return 1 if failed else 0


def _status(root: Path) -> int:
    if not root.is_dir():
        print(f"leviathan-client: no spool folder {root}", file=sys.stderr)
        return 2
    files = pending_files(root)
    folders: dict[str, list[int]] = {}
    for path in files:
        folders.setdefault(path.parent.name, []).append(path.stat().st_size)
    for name, sizes in sorted(folders.items()):
        print(f"{name}: {len(sizes)} bundles, {sum(sizes):,} bytes")
    rejected = [p for p in (root / REJECTED).glob("*.json") if not p.name.endswith(".answer.json")]
    print(f"pending: {len(files)} bundles, {sum(sum(s) for s in folders.values()):,} bytes "
          f"in {len(folders)} {PREFIX}* folders; rejected: {len(rejected)}")  # fmt: skip
    return 0


def _flush(args: argparse.Namespace) -> int:
    if not args.dir.is_dir():
        print(f"leviathan-client: no spool folder {args.dir}", file=sys.stderr)
        return 2
    client = _client(args, args.dir)
    done = client.close(args.flush_timeout)
    stats = client.stats
    print(f"delivered {stats.delivered}, rejected {stats.rejected}, "
          f"left {len(pending_files(args.dir))}")  # fmt: skip
    return 0 if done else 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="leviathan-client",
        description="Post event bundles to a Leviathan control plane; inspect and flush a spool.",
    )
    p.add_argument("--url", help="control plane base URL (env LEVIATHAN_URL)")
    p.add_argument("--token", help="bearer token (env LEVIATHAN_CONTROL_PLANE_TOKEN)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    post = sub.add_parser("post", help="post bundles from files or stdin")
    post.add_argument("files", nargs="*", help="files of bundles ('-' or none: stdin)")
    post.add_argument("--wait", type=float, help="?wait= seconds (at most 30)")
    post.add_argument("--deadline", type=float, default=60.0, help="retry for this long")
    spool = sub.add_parser("spool", help="inspect or flush a spool folder")
    spool.add_argument("action", choices=["status", "flush"])
    spool.add_argument("dir", type=Path)
    spool.add_argument("--flush-timeout", type=float, default=300.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="leviathan-client: %(message)s",
    )
    if args.command == "post":
        return _post(args)
    if args.action == "status":
        return _status(args.dir)
    return _flush(args)


if __name__ == "__main__":
    raise SystemExit(main())
