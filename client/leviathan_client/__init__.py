"""Worker-side client of the Leviathan control plane.

``Client``/``AsyncClient`` post event bundles with retries and an optional disk spool;
:mod:`leviathan_client.events` builds the events the control plane's graph understands.
Standard library only.
"""

from leviathan_client.aio import AsyncClient
from leviathan_client.client import Client, Stats
from leviathan_client.errors import (
    BundleTooLarge,
    ClientClosed,
    ClientError,
    InvalidBundle,
    SpoolFull,
    Unavailable,
)
from leviathan_client.events import Bundle, Event, bundle
from leviathan_client.retry import Backoff
from leviathan_client.transport import Answer

__all__ = [
    "Answer",
    "AsyncClient",
    "Backoff",
    "Bundle",
    "BundleTooLarge",
    "Client",
    "ClientClosed",
    "ClientError",
    "Event",
    "InvalidBundle",
    "SpoolFull",
    "Stats",
    "Unavailable",
    "bundle",
]
