"""PostgreSQL backend (asyncpg): the only place in the tree that imports asyncpg.

``store`` is the :class:`storage.base.EventStore` (pool, retries); ``write`` plans a batch
and ``copy`` streams it in, ``graph`` and ``topology`` keep the graph tables, ``read``
answers the views, ``codecs`` sets the connections' codecs, ``errors`` sorts failures
into retry or dead-letter, ``migrate`` applies ``migrations/*.sql`` (package data).
Imports the shared core, never :mod:`storage.ndjson`; see docs/architecture.md.
"""
