"""Token roles: what a bearer token may do, and what each route requires.

Pipeline position: read by :mod:`webcore.auth` when tokens are loaded and by the auth
middleware on every request. A token entry is the token, optionally followed by
whitespace and its roles joined with ``+`` (``s3cret ingest``, ``t0ken read+admin``); a
plain token holds every role, so configurations written before roles keep working.

- ``ingest``: record events (``POST /v1/events/ingest``, and any route that records a
  worker's or agent's own events);
- ``read``: the query API and the console;
- ``admin``: change what others recorded or the queue itself (invalidate an attempt,
  replay dead letters).

A route states its role with :func:`requires` on its handler. An unmarked route needs
``read`` for GET/HEAD and ``admin`` for every other method, so a new write endpoint is
closed to worker tokens until someone decides otherwise.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TypeVar

ATTR = "leviathan_role"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Role(enum.StrEnum):
    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


ALL_ROLES = frozenset(Role)
F = TypeVar("F", bound=Callable[..., object])


def requires(role: Role) -> Callable[[F], F]:
    """Mark a handler with the role a token needs to call it."""

    def mark(handler: F) -> F:
        setattr(handler, ATTR, role)
        return handler

    return mark


def required_role(handler: object, method: str) -> Role:
    """The handler's marked role, else the default for ``method``."""
    role = getattr(handler, ATTR, None)
    if isinstance(role, Role):
        return role
    return Role.READ if method in READ_METHODS else Role.ADMIN


def parse_entry(entry: str) -> tuple[str, frozenset[Role]]:
    """``TOKEN`` or ``TOKEN ROLE+ROLE``; raises ``ValueError`` naming an unknown role.

    The message never contains the token.
    """
    parts = entry.split()
    if len(parts) == 1:
        return parts[0], ALL_ROLES
    if len(parts) != 2:
        raise ValueError("a token entry is 'TOKEN' or 'TOKEN ROLE+ROLE' (roles joined by '+')")
    token, rest = parts
    roles: set[Role] = set()
    for name in rest.split("+"):
        try:
            roles.add(Role(name.strip().lower()))
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise ValueError(f"unknown token role {name.strip()!r} (known: {known})") from None
    return token, frozenset(roles)


def parse_list(text: str) -> list[tuple[str, frozenset[Role]]]:
    """A comma-separated list of entries (empty entries skipped)."""
    return [parse_entry(part) for part in text.split(",") if part.strip()]
