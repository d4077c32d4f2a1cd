"""What one request body costs in memory, estimated before it is parsed (docs/design-notes.md).

Pipeline position: between reading (and inflating) the body and parsing it in
:mod:`ingest.body`; the estimate is what the request's grant in the in-flight budget
(:mod:`ingest.budget`) grows to before orjson runs, and a body whose estimate exceeds one
request's share is refused (413) without being parsed.

The memory a JSON text takes once parsed, validated, encoded into entries and queued is not
a fixed multiple of its bytes: a long string costs about its bytes again, an empty object
``{}`` three bytes of text and ~90 bytes of Python objects, a key that occurs once (a
"wide" object) a string and a dict slot, and pydantic copies each payload dict once more.
So the estimate counts the tokens that become Python objects: containers (``{`` and ``[``),
values (``,`` — one per element or member but the last of each container, which the
container count covers), strings (``"`` / 2; escaped quotes only make the estimate larger)
and the bytes themselves. Structural characters inside strings are counted as well, which
can only overestimate. Counting is C-speed: each slice of the body is reduced to its
structural characters with ``bytes.translate`` and those are counted, under 1 ns per byte
against orjson's ~17. Bodies of at most :data:`SMALL_BODY` bytes are charged the worst
case per byte instead, without looking at them (the common bundle pays nothing for this).

The weights were measured with peak RSS (VmHWM) of a process parsing, validating and
queueing bodies of one shape each, and each is at least the worst case seen for its token,
so the estimate is an upper bound for the shapes tested in
``tests/ingest/test_ingest_hostile.py``:

=====================================  =========  ==========  ========
body (about 30 MiB unless noted)       measured   estimated   per byte
=====================================  =========  ==========  ========
10 M empty objects in one payload      870 MiB    refused     30.4
15 M zeros in one list                 372 MiB    refused     13.0
2 M unique keys in one payload         395 MiB    refused     11.6
100,000 ``file.discovered`` events     159 MiB    see tests   4.8
64 MiB of long strings                 140 MiB    see tests   2.3
=====================================  =========  ==========  ========
"""

from __future__ import annotations

from dataclasses import dataclass

SMALL_BODY = 64 * 1024
# worst case seen per byte of text (``{"":{}}``: two containers and a dict slot in 7 bytes)
SMALL_FACTOR = 48
BYTE_COST_HALVES = 6  # 3 per byte: the text and its read chunks, its strings, the entries
CONTAINER_COST = 64  # an empty dict or list (its slot in the parent is a value)
VALUE_COST = 128  # a dict slot and pydantic's copy of it, or a list slot and a number
STRING_COST = 40  # a str object's header, when the key cache does not share it
SLICE = 1024 * 1024  # counted a slice at a time: the reduced copy stays small
_STRUCTURAL = b'{[,"'
_DROP = bytes(c for c in range(256) if c not in _STRUCTURAL)


@dataclass(frozen=True, slots=True)
class Cost:
    """The estimate and what it was made of (named in a 413)."""

    nbytes: int
    containers: int = 0
    values: int = 0
    strings: int = 0
    total: int = 0


def estimate(body: bytes | bytearray) -> Cost:
    """Bytes of memory ``body`` may take from parsing until its entries are queued."""
    n = len(body)
    if n <= SMALL_BODY:
        return Cost(n, total=n * SMALL_FACTOR)
    containers = values = quotes = 0
    for start in range(0, n, SLICE):
        marks = body[start : start + SLICE].translate(None, _DROP)
        containers += marks.count(b"{") + marks.count(b"[")
        values += marks.count(b",")
        quotes += marks.count(b'"')
    strings = quotes // 2
    total = (
        BYTE_COST_HALVES * n // 2
        + CONTAINER_COST * containers
        + VALUE_COST * values
        + STRING_COST * strings
    )
    return Cost(n, containers, values, strings, total)
