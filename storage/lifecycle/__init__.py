"""Data lifecycle: export, import (our own export and the original control plane's
stores) and retention of the event log.

Pipeline position: beside the write path. Imports go through
:meth:`storage.base.EventStore.write_batch` (the very call the consumer makes, so
duplicates, revisions, the chain and the graph behave as for live traffic); exports page
through :meth:`storage.base.EventStore.list_events` (the method behind ``/v1/events``).
This package talks to a backend only through :class:`storage.base.EventStore`; the one
backend-specific reader (the original's PostgreSQL table) lives in
``storage/postgres/original.py``.
"""
