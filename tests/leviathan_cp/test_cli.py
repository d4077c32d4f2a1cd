"""``leviathan-cp`` dispatcher and its admin commands (verify, migrate)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from leviathan_cp.cli import COMMANDS, main
from storage.ndjson.log import partition_path
from storage.ndjson.store import NdjsonStore
from tests import factories as f


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name}" in out


def test_no_command_and_unknown_command_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


async def _store_events(directory: Path) -> None:
    store = NdjsonStore(directory)
    await store.open()
    try:
        bundle = f.envelope(f.attempt_lifecycle("att-1", "task-1"), entry_id="1-0")
        assert (await store.write_batch(0, [bundle])).written > 0
    finally:
        await store.close()


@pytest.fixture
def ndjson_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("LEVIATHAN_CONTROL_PLANE_BACKEND", "LEVIATHAN_BACKEND", "POSTGRES_DSN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEVIATHAN_NDJSON_DIR", str(tmp_path))
    monkeypatch.setenv("LEVIATHAN_PARTITIONS", "2")
    return tmp_path


async def test_verify_prints_each_partition_and_fails_on_tampering(
    ndjson_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _store_events(ndjson_env)
    from leviathan_cp.admin import _verify
    from storage.config import StorageSettings

    assert await _verify(StorageSettings()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("partition 0: ok, ")
    assert lines[1] == "partition 1: ok, 0 events"
    path = partition_path(ndjson_env, 0)
    raw = path.read_bytes()
    assert b'"running"' in raw
    path.write_bytes(raw.replace(b'"running"', b'"runninG"', 1))
    assert await _verify(StorageSettings()) == 1
    assert "partition 0: BROKEN" in capsys.readouterr().out


async def test_verify_resumes_after_the_last_verified_prefix_and_full_walks_it(
    ndjson_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ndjson_env / "home"
    monkeypatch.setenv("HOME", str(home))
    await _store_events(ndjson_env)
    assert await asyncio.to_thread(main, ["verify"]) == 0
    first = capsys.readouterr().out.splitlines()
    count = int(first[0].split(", ")[1].split()[0])
    assert first[0] == f"partition 0: ok, {count} events"
    assert (home / ".leviathan" / "verified-chains.json").exists()
    assert await asyncio.to_thread(main, ["verify"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"partition 0: ok, {count} events (0 new)"
    # an edit inside the verified prefix (same length, hash fields untouched): a resumed
    # check does not re-read it; --full does
    path = partition_path(ndjson_env, 0)
    lines = path.read_bytes().splitlines(keepends=True)
    assert b'"worker-att-1"' in lines[0]
    lines[0] = lines[0].replace(b'"worker-att-1"', b'"worker-att-X"', 1)
    path.write_bytes(b"".join(lines))
    assert await asyncio.to_thread(main, ["verify"]) == 0
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["verify", "--full"]) == 1
    assert capsys.readouterr().out.startswith("partition 0: BROKEN at seq 1 ")


def test_verify_of_a_missing_ndjson_directory_fails_instead_of_creating_it(
    ndjson_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = ndjson_env / "no-such-log"
    monkeypatch.setenv("LEVIATHAN_NDJSON_DIR", str(typo))
    assert main(["verify"]) == 2
    assert capsys.readouterr().err == f"verify: no NDJSON log at {typo} (LEVIATHAN_NDJSON_DIR)\n"
    assert not typo.exists()


def test_bad_setting_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LEVIATHAN_REDIS_URL", "http://nope")
    assert main(["verify"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "LEVIATHAN_REDIS_URL" in err


@pytest.mark.integration
def test_migrate_applies_then_is_up_to_date(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POSTGRES_DSN", postgres_url)
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out.startswith("applied: ")
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out.strip() == "schema up to date"


def test_migrate_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POSTGRES_DSN", "postgresql://postgres@127.0.0.1:1/none")
    assert main(["migrate"]) == 2
    assert capsys.readouterr().err.startswith("migrate: cannot reach PostgreSQL")


@pytest.mark.integration
def test_migrate_to_a_database_that_does_not_exist_is_one_line(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the server is up but refuses the connection: a DSN to fix, not a traceback
    missing = postgres_url.rsplit("/", 1)[0] + "/no_such_database_here"
    monkeypatch.setenv("POSTGRES_DSN", missing)
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("migrate: cannot reach PostgreSQL")
    assert "InvalidCatalogNameError" in err
