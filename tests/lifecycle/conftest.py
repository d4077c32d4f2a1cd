"""Fixtures of the lifecycle tests: the original control plane's stores (tests/fixtures/original)
and a storage environment per backend for the ``leviathan-cp`` commands."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from storage.config import StorageSettings

ORIGINAL = Path(__file__).resolve().parents[1] / "fixtures" / "original"
JOURNAL_ROOT = ORIGINAL / "ndjson"
DUMP = ORIGINAL / "postgres.sql"


def use_backend(
    monkeypatch: pytest.MonkeyPatch, backend: str, where: str | Path
) -> StorageSettings:
    """Point the process env (what the commands read) at one storage; returns its settings."""
    monkeypatch.setenv("LEVIATHAN_CONTROL_PLANE_BACKEND", backend)
    if backend == "postgres":
        monkeypatch.setenv("POSTGRES_DSN", str(where))
    else:
        monkeypatch.delenv("POSTGRES_DSN", raising=False)
        monkeypatch.setenv("LEVIATHAN_NDJSON_DIR", str(where))
    return StorageSettings()


@pytest.fixture(params=["ndjson", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> StorageSettings:
    """The commands' env pointed at an empty store of each backend."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    where: str | Path = (
        request.getfixturevalue("postgres_url") if request.param == "postgres" else tmp_path / "log"
    )
    return use_backend(monkeypatch, request.param, where)


def restore_dump(dsn: str) -> None:
    """Load the original's pg_dump into ``dsn`` with psql (as an operator would)."""
    subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", str(DUMP)],
        check=True,
        capture_output=True,
        timeout=60,
    )
