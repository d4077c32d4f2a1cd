"""NDJSON backend: per-partition append-only log files and a SQLite index beside them.

``store`` is the :class:`storage.base.EventStore` (scheduling only); ``write`` plans and
commits a batch, ``index`` owns the SQLite schema, ``log`` the files and their recovery,
``read`` answers the views. Imports the shared core, never :mod:`storage.postgres`; see
docs/architecture.md.
"""
