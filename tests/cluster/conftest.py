"""Fixtures of the cluster tests: the consumer suite's backend factory (each real backend).

The cluster itself (``redis_cluster``, ``cluster_url``) is session-scoped in tests/conftest.py.
"""

from __future__ import annotations

from tests.consumer.conftest import backend_settings

__all__ = ["backend_settings"]
