"""Sources of ``leviathan-cp import``: our own export and the original's NDJSON journal.

Pipeline position: between a file and :class:`storage.lifecycle.importer.Importer`. Each
yields, in file order, an :class:`Incoming` per importable line or ``(line, reason)`` for
one that is not an event, so the command reports it and goes on.

Mapping of the original's events, which were stored without their bundle envelope:

- target: ``payload.target_id``; else the target an earlier event of the same
  ``attempt_id`` or ``task_id`` named; else the ``--target`` flag; else the line is
  reported (nothing to file it under).
- bundle id: ``original-<attempt_id>``, else ``original-task-<task_id>``, else
  ``original-<target>`` — deterministic, so a second run routes every event to the
  partition it went to the first time.
- arrival time: the original's NDJSON journal records none, so the event's own timestamp
  (naive timestamps are UTC, as the original's workers meant them) stands in for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from storage.lifecycle.importer import Incoming
from storage.lifecycle.original import ChainCheck, read_journal

Item = Incoming | tuple[int, str]


def _epoch(text: Any) -> float:
    value = datetime.fromisoformat(str(text))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class IdCount:
    """Distinct event ids of an export: its lines of revision 1 (no set of ids kept)."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, _event_id: str) -> None:
        self.count += 1

    def __len__(self) -> int:
        return self.count


def read_export(path: Path, ids: set[str] | IdCount | None = None) -> Iterator[Item]:
    """Lines written by ``leviathan-cp export`` (the ``/v1/events`` shape)."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                data = orjson.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
                received = _epoch(data["received_at"])
                partition = data.get("partition")
                yield Incoming(
                    line=number,
                    event=data,
                    target=data["target"],
                    bundle_id=data["bundle_id"],
                    received_at=received,
                    partition=partition if type(partition) is int else None,
                )
            except (ValueError, KeyError, TypeError) as exc:
                what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
                yield number, f"not an exported event: {what}"
                continue
            if ids is not None and data.get("revision", 1) == 1:
                ids.add(data.get("event_id", ""))


class OriginalMapper:
    """Targets and bundle ids for the original's envelope-less events."""

    def __init__(self, fallback_target: str | None) -> None:
        self.fallback = fallback_target
        self._targets: dict[tuple[str, str], str] = {}

    def target_of(self, payload: dict[str, Any]) -> str | None:
        keys = [
            (role, payload[role])
            for role in ("attempt_id", "task_id")
            if isinstance(payload.get(role), str)
        ]
        target = payload.get("target_id")
        if isinstance(target, str) and target:
            for key in keys:
                self._targets.setdefault(key, target)
            return target
        for key in keys:
            if key in self._targets:
                return self._targets[key]
        return self.fallback

    @staticmethod
    def bundle_of(payload: dict[str, Any], target: str) -> str:
        attempt, task = payload.get("attempt_id"), payload.get("task_id")
        if isinstance(attempt, str) and attempt:
            return f"original-{attempt}"
        if isinstance(task, str) and task:
            return f"original-task-{task}"
        return f"original-{target}"

    def incoming(self, line: int, event: dict[str, Any], received_at: float) -> Item:
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return line, "payload is not an object"
        target = self.target_of(payload)
        if target is None:
            return line, "no target: payload has no target_id (pass --target)"
        return Incoming(line, event, target, self.bundle_of(payload, target)[:255], received_at)


def read_original(
    source: Path, chain: ChainCheck, mapper: OriginalMapper, ids: set[str] | None = None
) -> Iterator[Item]:
    """The original's journal (``source``: its data root or the file)."""
    for number, data in read_journal(source, chain):
        if isinstance(data, str):
            yield number, data
            continue
        try:
            received = _epoch(data.get("timestamp"))
        except (ValueError, TypeError, OverflowError):
            received = 0.0  # the import validates the timestamp and reports the line
        if ids is not None and isinstance(data.get("event_id"), str):
            ids.add(data["event_id"])
        yield mapper.incoming(number, data, received)
