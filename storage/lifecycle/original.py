"""The original control plane's NDJSON journal: its hash rule, its chain, its lines.

Pipeline position: the source side of ``leviathan-cp import --format original``. The
journal is one file, ``graph/events.ndjson`` under the original's data root: one compact
JSON object per line with ``event_id, event_type, timestamp, actor_id, payload,
prev_hash, hash``, one global chain whose genesis ``prev_hash`` is ``null``. Its hash is
sha256 over sorted-key, compact, ASCII-escaped JSON of those six members (``hash``
excluded), with the timestamp as Python's ``isoformat()`` of the parsed time (a stored
``Z`` hashes as ``+00:00``). Our own chain (storage/chain.py) is per partition and over
normalised UTC timestamps, so an imported event gets a new hash in our log; the
original's chain is verified while reading and the result reported, never enforced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JOURNAL = Path("graph") / "events.ndjson"
HASHED = ("event_id", "event_type", "timestamp", "actor_id", "payload", "prev_hash")


def original_hash(event: dict[str, Any], timestamp: str | None = None) -> str:
    """The original's ``hash`` of ``event`` (``timestamp``: the text to hash instead)."""
    body = {name: event.get(name) for name in HASHED}
    text = body["timestamp"] if timestamp is None else timestamp
    if isinstance(text, str) and text.endswith("Z"):
        text = text[:-1] + "+00:00"  # pydantic v2 wrote Z, isoformat() hashed +00:00
    body["timestamp"] = text
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def journal_path(source: Path) -> Path:
    """The journal file of a data root (``~/.leviathan``) or the file itself."""
    return source / JOURNAL if source.is_dir() else source


@dataclass(slots=True)
class ChainCheck:
    """What walking the original's chain found: links and hashes that do not hold."""

    checked: int = 0
    bad_links: list[int] = field(default_factory=list)  # line numbers
    bad_hashes: list[int] = field(default_factory=list)
    _prev: str | None = None

    def feed(self, line: int, event: dict[str, Any]) -> None:
        self.checked += 1
        if event.get("prev_hash") != self._prev:
            self.bad_links.append(line)
        stored = event.get("hash")
        if stored != original_hash(event):
            self.bad_hashes.append(line)
        self._prev = stored if isinstance(stored, str) else None

    @property
    def ok(self) -> bool:
        return not self.bad_links and not self.bad_hashes

    def summary(self) -> str:
        if self.ok:
            return f"original chain ok ({self.checked} links)"
        parts = []
        if self.bad_links:
            parts.append(f"{len(self.bad_links)} broken link(s), first at line {self.bad_links[0]}")
        if self.bad_hashes:
            parts.append(
                f"{len(self.bad_hashes)} hash(es) not matching their content, "
                f"first at line {self.bad_hashes[0]}"
            )
        return "original chain BROKEN: " + "; ".join(parts)


def read_journal(path: Path, chain: ChainCheck) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """``(line number, event)`` per non-empty line, or ``(line number, reason)`` for a line
    that is not a JSON object; every event goes through ``chain`` in file order."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except ValueError as exc:
                yield number, f"not JSON: {exc}"
                continue
            if not isinstance(data, dict):
                yield number, "not a JSON object"
                continue
            chain.feed(number, data)
            yield number, data
