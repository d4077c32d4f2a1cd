"""Which failures of a PostgreSQL batch write are transient and which are the data's.

Pipeline position: :meth:`storage.postgres.store.PostgresStore.write_batch` passes every
exception of a batch write (after its own race retries) through :func:`classify`, so the
consumer gets :class:`~storage.base.StorageUnavailable` (retry the same batch, however
long: nothing is dead-lettered for an outage) or :class:`~storage.base.StorageDataError`
(the same batch fails again: isolate the entries responsible), as docs/design-notes.md
("Storage errors") tabulates:

- transient: connection errors (class 08, refused/reset sockets, a closed connection,
  pool acquire timeouts), operator intervention (57: admin or crash shutdown, cannot
  connect now; a query canceled by a statement timeout, 57014, is
  :class:`~storage.base.StorageTimeout`: transient, but the consumer retries it only a
  bounded number of times before isolating the batch as data), insufficient resources (53:
  disk full, out of memory, too many connections), transaction rollbacks (40:
  serialization failure, deadlock), lock timeouts (55P03), system errors (58: I/O), a
  read-only transaction after a failover (25006), and any other server error that is not
  the data's (a batch then waits for an operator instead of being dead-lettered);
- data: data exceptions (22: a value out of range, bad text), integrity violations (23)
  other than the unique-key race the write path retries, program limits (54: an index
  row too large), the client's own argument encoding errors, and TypeError/ValueError/
  OverflowError raised while the batch is planned (Python side).
"""

from __future__ import annotations

import asyncpg

from storage.base import (
    StorageDataError,
    StorageError,
    StorageTimeout,
    StorageUnavailable,
    describe,
)

# SQLSTATE classes whose errors the batch's values cause; every other server error is
# treated as transient
DATA_CLASSES = frozenset({"22", "23", "54"})
# query_canceled: the statement timeout fired (or an operator cancelled the query); a
# consumer retries it a bounded number of times before isolating the batch as data
STATEMENT_TIMEOUT = "57014"

# Python-side errors of planning/encoding a batch (asyncpg's client-side DataError, raised
# when an argument cannot be encoded, is a ValueError too)
PLANNING_ERRORS = (TypeError, ValueError, OverflowError)


def classify(exc: BaseException) -> StorageError | None:
    """The storage error ``exc`` stands for, or None if it is not a database/data failure
    (a bug, a cancellation: the caller re-raises it unchanged)."""
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        if sqlstate[:2] in DATA_CLASSES:
            return StorageDataError(f"PostgreSQL refused the batch: {describe(exc)}")
        if sqlstate == STATEMENT_TIMEOUT:
            return StorageTimeout(f"PostgreSQL cancelled the batch: {describe(exc)}")
        return StorageUnavailable(f"PostgreSQL unavailable: {describe(exc)}")
    if isinstance(exc, PLANNING_ERRORS):
        return StorageDataError(f"batch cannot be written to PostgreSQL: {describe(exc)}")
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        # refused/reset sockets, ENOSPC on the client, pool acquire or command timeouts,
        # "connection is closed", "another operation is in progress" after a broken one
        return StorageUnavailable(f"PostgreSQL unavailable: {describe(exc)}")
    return None
