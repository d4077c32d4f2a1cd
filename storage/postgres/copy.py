"""COPY text encoding of event rows, streamed to PostgreSQL while the batch is planned.

Pipeline position: :func:`storage.postgres.write.write_batch` feeds ``COPY events FROM STDIN``
from an async generator that links the batch chunk by chunk and yields each chunk as COPY
text. asyncpg writes every yielded chunk to the socket at once, so the server inserts one
chunk (its indexes are most of a batch's cost) while Python digests, links and encodes
the next: the two cores work at the same time instead of taking turns, which a
``copy_records_to_table`` of finished rows cannot do (it encodes all rows first, in the
event loop, and the next COPY can only start when the previous one is done).

Text format (PostgreSQL docs, "COPY ... File Formats"): columns separated by tab, rows by
newline, ``\\N`` for NULL, and backslash, tab, newline and carriage return written as
backslash escapes. Everything else, any UTF-8 included, goes through as is; NUL never
reaches here (refused at ingest and by the envelope decoder).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

# Characters with a meaning in COPY text: escaped, everything else passes through.
_SPECIAL = re.compile(r"[\\\t\n\r]")
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_search = _SPECIAL.search


def _escape_match(match: re.Match[str]) -> str:
    return _ESCAPES[match.group()]


def field(value: str | None) -> str:
    """One text column as COPY text reads it back: the same string, or NULL."""
    if value is None:
        return "\\N"
    if _search(value) is None:  # the usual case: one scan, no copy
        return value
    return _SPECIAL.sub(_escape_match, value)


def json_field(data: bytes) -> str:
    """Serialised JSON (no raw control characters: JSON escapes them) as a COPY column.

    Only its backslashes need doubling; the server then stores exactly ``data``.
    """
    text = data.decode()
    return text.replace("\\", "\\\\") if "\\" in text else text


def encode_rows(rows: Iterable[Sequence[Any]]) -> bytes:
    """Rows in :data:`storage.postgres.write.COPY_COLUMNS` order as COPY text.

    The ``ts`` column is sent as its normalised text (``ts_text``, UTC with ``Z``), which
    timestamptz parses to the same instant whatever the session's time zone.
    """
    f = field
    lines = [
        f"{part}\t{seq}\t{f(eid)}\t{f(etype)}\t{ts_text}\t{ts_text}\t{f(actor)}\t"
        f"{json_field(payload)}\t{f(bundle)}\t{f(target)}\t{received}\t{prev}\t{hash_}\t"
        f"{digest}\t{f(task)}\t{f(attempt)}\t{revision}\n"
        for (part, seq, eid, etype, _ts, ts_text, actor, payload, bundle, target, received,
             prev, hash_, digest, task, attempt, revision) in rows
    ]  # fmt: skip
    return "".join(lines).encode()
