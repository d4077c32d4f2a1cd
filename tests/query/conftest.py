"""Fixtures of the query API tests (defined in query_support, registered here once)."""

from tests.query.query_support import (  # noqa: F401  (pytest finds fixtures by attribute)
    backend_settings_fixture,
    make_app_fixture,
    redis_fixture,
    seeded_fixture,
)
