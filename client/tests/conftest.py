"""Fixtures of the client's own tests: a scripted fake control plane, bundles."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakecp import FakeControlPlane
from leviathan_client.retry import Backoff


@pytest.fixture
def fake() -> Iterator[FakeControlPlane]:
    server = FakeControlPlane()
    yield server
    server.stop()


@pytest.fixture
def quick() -> Backoff:
    """Backoff small enough for tests (Retry-After is still honoured as sent)."""
    return Backoff(base=0.01, cap=0.05)
