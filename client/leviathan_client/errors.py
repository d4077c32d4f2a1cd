"""Exceptions the client raises to its caller.

Pipeline position: the worker's side of ``POST /v1/events/ingest``. Everything the server
answers is an :class:`leviathan_client.transport.Answer`; these are the cases where the
client itself refuses or gives up.
"""

from __future__ import annotations


class ClientError(Exception):
    """Base class of every exception of this package."""


class ClientClosed(ClientError):
    """``send`` after ``close``."""


class SpoolFull(ClientError):
    """The spool holds ``max_spool_bytes`` already: the newest bundle is refused (the oldest
    ones are kept), so the caller decides what to drop."""


class BundleTooLarge(ClientError):
    """One event alone is over the server's body limit: no split can make it fit."""


class InvalidBundle(ClientError):
    """The bundle is not a JSON object with ``target``, ``bundle_id`` and ``events``."""


class Unavailable(ClientError):
    """``post`` ran out of time while the control plane kept answering retryable errors;
    ``last`` is the last answer or connection error seen."""

    def __init__(self, message: str, last: object) -> None:
        super().__init__(message)
        self.last = last
