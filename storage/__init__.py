"""Storage tier: wire schema, stream envelope, hash chain, graph projection, backends.

Shared by ``ingest`` (producer, query API) and ``consumer`` (writer); imports neither.
The shared core lives here; the backends are the subpackages :mod:`storage.ndjson` and
:mod:`storage.postgres`, picked by :func:`storage.config.create_store`. Which module owns
which rule: docs/architecture.md.
"""
