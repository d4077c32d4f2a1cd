"""GET /v1/autonomy/status: whether autonomy is on, from the operators' YAML file.

Pipeline position: a read endpoint with no storage behind it. The file at
``LEVIATHAN_AUTONOMY_CONFIG_PATH`` (a ConfigMap mounted read-only in Kubernetes) is read
on every request, in a worker thread, so editing the ConfigMap takes effect without a
restart. Its top-level ``autonomy_enabled`` (a YAML boolean) is the answer; ``source``
says where it came from:

- ``configmap:{path}``: read from the file (the original's wording);
- ``default (config not mounted)``: no file, so enabled (the original's answer, word for
  word);
- ``error: …``: the file cannot be read, is not YAML, or has no boolean
  ``autonomy_enabled``. Then the answer is *disabled*: a broken switch must not turn
  autonomy on. Never a 500.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from pydantic import BaseModel

from query.deps import DEPS_KEY

MAX_FILE = 64 * 1024
KEY = "autonomy_enabled"


class AutonomyStatus(BaseModel):
    autonomy_enabled: bool
    source: str


def _parse(text: str, path: Path) -> AutonomyStatus:
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return AutonomyStatus(autonomy_enabled=False, source=f"error: {path} is not YAML{where}")
    value = doc.get(KEY) if isinstance(doc, dict) else None
    if not isinstance(value, bool):
        return AutonomyStatus(
            autonomy_enabled=False,
            source=f"error: {path} has no boolean {KEY} (found {type(value).__name__})",
        )
    return AutonomyStatus(autonomy_enabled=value, source=f"configmap:{path}")


def read_status(path: Path) -> AutonomyStatus:
    """The status the file at ``path`` gives (blocking: call it in a thread)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE + 1)
    except FileNotFoundError:
        return AutonomyStatus(autonomy_enabled=True, source="default (config not mounted)")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return AutonomyStatus(autonomy_enabled=False, source=f"error: cannot read {path}: {reason}")
    if len(raw) > MAX_FILE:
        return AutonomyStatus(
            autonomy_enabled=False, source=f"error: {path} is over {MAX_FILE} bytes"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return AutonomyStatus(autonomy_enabled=False, source=f"error: {path} is not UTF-8")
    return _parse(text, path)


async def handle_autonomy_status(request: web.Request) -> web.Response:
    status = await asyncio.to_thread(read_status, request.app[DEPS_KEY].autonomy_config)
    return web.json_response(text=status.model_dump_json())
