"""``leviathan-cp dev`` on PostgreSQL, and its Ctrl-C against a lying lag counter.

Real processes as in test_dev.py: dev with ``LEVIATHAN_CONTROL_PLANE_BACKEND=postgres`` stores
in the test's own ``lvt_*`` database; ``dev --postgres`` in a private cluster it creates in
the folder; and a stop after Redis' group lag counter was made to lie (``XGROUP SETID ...
ENTRIESREAD 0``, what an AOF reload leaves) returns at once and says nothing is queued.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from leviathan_cp import devpostgres
from leviathan_cp.ports import free_port
from storage.queue import GROUP, StreamLayout
from tests.leviathan_cp.test_dev import _end, _env, _post, _start_dev, _wait_banner

pytestmark = pytest.mark.slow


def _post_sample(work: Path, home: Path, port: int) -> str:
    sample = work / ".leviathan" / "sample-bundle.json"
    token = (home / ".leviathan" / "control-plane-token").read_text().strip()
    url = f"http://127.0.0.1:{port}/v1/events/ingest?wait=5"
    status, body = _post(url, sample.read_bytes(), token)
    assert status == 200, body
    event_id: str = orjson.loads(sample.read_bytes())["events"][0]["event_id"]
    return event_id


def _stop(proc: subprocess.Popen[str]) -> tuple[str, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    return rest, time.monotonic() - started


async def _stored(dsn: str, event_id: str) -> int:
    con = await asyncpg.connect(dsn)
    try:
        count: int = await con.fetchval("SELECT count(*) FROM events WHERE event_id = $1", event_id)
        return count
    finally:
        await con.close()


@pytest.mark.integration
def test_dev_with_the_postgres_backend_stores_in_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    port = free_port()
    env = _env(home, port)
    env.update({"LEVIATHAN_CONTROL_PLANE_BACKEND": "postgres", "POSTGRES_DSN": postgres_url})
    proc = _start_dev(work, env)
    try:
        banner = _wait_banner(proc, 90)
        assert f"storage: postgres at {postgres_url}" in banner
        event_id = _post_sample(work, home, port)
        state = orjson.loads((work / ".leviathan" / "dev.json").read_bytes())
        assert (state["backend"], state["postgres_dsn"]) == ("postgres", postgres_url)
        rest, _ = _stop(proc)
    finally:
        _end(proc)
    assert proc.returncode == 0, rest
    assert asyncio.run(_stored(postgres_url, event_id)) == 1
    assert not list((work / ".leviathan" / "data").rglob("*.ndjson"))  # nothing in NDJSON


def test_dev_postgres_runs_a_private_cluster_in_the_folder() -> None:
    if devpostgres.bindir() is None:
        if os.environ.get("LEVIATHAN_REQUIRE_SERVICES") == "1":
            pytest.fail("PostgreSQL server binaries (initdb, postgres) not installed")
        pytest.skip("PostgreSQL server binaries (initdb, postgres) not installed")
    # As root the server runs as the postgres account, which must reach the folder: a
    # world-traversable temp dir rather than pytest's (mode 700) tmp_path.
    root = Path(tempfile.mkdtemp(prefix="lvt-dev-pg-"))
    try:
        root.chmod(0o711)
        home, work = root / "home", root / "work"
        home.mkdir()
        work.mkdir()
        port = free_port()
        proc = _start_dev(work, _env(home, port), "--postgres")
        try:
            banner = _wait_banner(proc, 120)
            assert (
                "storage: postgres (private cluster) at postgresql://postgres:***@127.0.0.1:"
                in (banner)
            )
            event_id = _post_sample(work, home, port)
            dsn = orjson.loads((work / ".leviathan" / "dev.json").read_bytes())["postgres_dsn"]
            assert asyncio.run(_stored(dsn, event_id)) == 1
            rest, _ = _stop(proc)
        finally:
            _end(proc)
        assert proc.returncode == 0, rest
        assert rest.strip().splitlines()[-1] == (
            "leviathan-cp dev: stopped ingest, the consumer and the queue (redis-server) and "
            "PostgreSQL; everything accepted is stored, nothing is lost."
        )
        cluster = work / ".leviathan" / "postgres"
        assert (cluster / "data" / "PG_VERSION").exists()
        assert (cluster / "password").stat().st_mode & 0o777 == 0o600
        assert not (cluster / "data" / "postmaster.pid").exists()  # the server stopped
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_dev_postgres_as_root_in_a_closed_folder_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0 or devpostgres.bindir() is None:
        pytest.skip("only as root with the PostgreSQL server installed")
    from leviathan_cp.dev import run

    monkeypatch.delenv("LEVIATHAN_REDIS_URL", raising=False)
    monkeypatch.setenv("LEVIATHAN_API_PORT", str(free_port()))
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    assert run(closed / "work" / ".leviathan", tmp_path, private_postgres=True) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "runs the server as the 'postgres' account, which cannot reach" in err
    assert not (closed / "work" / ".leviathan" / "redis" / "redis.pid").exists()  # queue stopped


async def _fake_lag(url: str) -> int:
    """What an AOF reload leaves: every group delivered up to the end, its counter far behind.
    Returns the lag Redis then reports in total."""
    client = Redis.from_url(url)
    lied = 0
    try:
        for stream in StreamLayout(partitions=8).streams():
            if await client.exists(stream):
                await client.xgroup_setid(stream, GROUP, "$", entries_read=0)
                rows = await client.xinfo_groups(stream)
                row = next(r for r in rows if r["name"] == GROUP.encode())
                lied += int(row["lag"] or 0)
    finally:
        await client.aclose()
    return lied


def test_ctrl_c_with_a_phantom_lag_returns_at_once_and_says_nothing_is_queued(
    tmp_path: Path,
) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not on PATH")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    port = free_port()
    proc = _start_dev(work, _env(home, port))
    try:
        _wait_banner(proc, 60)
        _post_sample(work, home, port)
        state = orjson.loads((work / ".leviathan" / "dev.json").read_bytes())
        lied = asyncio.run(_fake_lag(state["redis_url"]))
        assert lied > 0  # Redis now reports entries that are not there
        rest, took = _stop(proc)
    finally:
        _end(proc)
    assert proc.returncode == 0, rest
    assert took < 10, f"Ctrl-C took {took:.1f} s"
    assert "still queued" not in rest
    assert rest.strip().splitlines()[-1].endswith("everything accepted is stored, nothing is lost.")
