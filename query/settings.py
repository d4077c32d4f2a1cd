"""Settings of the query process (``leviathan-cp query``), built once in ``query.__main__``.

Pipeline position: the read tier reads storage and, for ``/v1/stats``, the Redis streams'
counters; it needs nothing of the ingest tier's limits, budget or publisher. Everything it
reads is inherited: tokens, listen address and timeouts (:mod:`webcore.settings`), the
storage backend and the stream layout (:class:`storage.config.StorageSettings`). Two
processes on one host need two ``LEVIATHAN_API_PORT`` values.
"""

from __future__ import annotations

from webcore.settings import ApiSettings


class QuerySettings(ApiSettings):
    """Query tier settings; the same environment names the ingest tier reads."""
