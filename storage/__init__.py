"""Storage tier: wire schema, stream envelope, hash chain, graph projection, backends.

Shared by ``ingest`` (producer, query API) and ``consumer`` (writer); imports neither.
"""
