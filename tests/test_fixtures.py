"""The test fixtures touch only what they create (tests/conftest.py).

README command 2 must leave a user's Redis alone: unless ``LEVIATHAN_TEST_REDIS_URL`` names
one, the Redis that ``redis_url`` flushes before each test is a redis-server this session
started in its own temp dir, never whatever listens on the default port 6379.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from redis import Redis


@pytest.mark.integration
def test_the_redis_the_tests_flush_is_their_own(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if os.environ.get("LEVIATHAN_TEST_REDIS_URL"):
        pytest.skip("LEVIATHAN_TEST_REDIS_URL names the Redis the tests may flush")
    parts = urlsplit(redis_url)
    assert parts.hostname == "127.0.0.1"
    assert parts.port != 6379  # the default port, where a user's own Redis listens
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        config: dict[str, str] = client.config_get("dir")  # type: ignore[assignment]
        directory = config["dir"]
    finally:
        client.close()
    # the server's working directory is one of this session's temp dirs: it started it
    assert Path(directory).resolve().is_relative_to(tmp_path_factory.getbasetemp().resolve())


@pytest.mark.integration
def test_the_databases_the_tests_use_are_their_own(postgres_url: str) -> None:
    assert urlsplit(postgres_url).path.startswith("/lvt_")  # created and dropped per test
