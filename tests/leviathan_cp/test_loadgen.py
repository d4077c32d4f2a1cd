"""Load generator against a small in-test ingest double (loopback aiohttp server).

The double keeps events by id like storage does (duplicates collapse), pages
``GET /v1/events`` with an opaque cursor and can be told to drop events so the stored-count
check has something to catch. The real ingest+consumer run is in bench/stack_load.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import BaseTestServer, TestServer

from leviathan_cp import loadgen

TOKEN = "s3cret-token"
STORE: web.AppKey[dict[str, dict[str, Any]]] = web.AppKey("store", dict)
DROP: web.AppKey[list[int]] = web.AppKey("drop", list)
GZIPPED: web.AppKey[list[int]] = web.AppKey("gzipped", list)


async def _ingest(request: web.Request) -> web.Response:
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        return web.json_response({"detail": "bad token"}, status=401)
    # aiohttp inflates Content-Encoding: gzip bodies itself; count that it was used.
    request.app[GZIPPED][0] += request.headers.get("Content-Encoding") == "gzip"
    body = orjson.loads(await request.read())
    store = request.app[STORE]
    drop = request.app[DROP]
    for ev in body["events"]:
        if drop and drop[0] > 0:
            drop[0] -= 1
            continue
        store.setdefault(ev["event_id"], {**ev, "target": body["target"]})
    return web.json_response({"status": "accepted", "ingested": len(body["events"])}, status=202)


async def _events(request: web.Request) -> web.Response:
    target = request.query["target"]
    limit = int(request.query.get("limit", "100"))
    start = int(request.query.get("after", "0"))
    rows = [e for e in request.app[STORE].values() if e["target"] == target]
    page = rows[start : start + limit]
    nxt = str(start + limit) if start + limit < len(rows) else None
    return web.json_response({"events": page, "next_cursor": nxt})


def _app(drop: int = 0) -> web.Application:
    app = web.Application()
    app[STORE] = {}
    app[DROP] = [drop]
    app[GZIPPED] = [0]
    app.router.add_post("/v1/events/ingest", _ingest)
    app.router.add_get("/v1/events", _events)
    return app


def _argv(server: BaseTestServer, *extra: str) -> list[str]:
    url = str(server.make_url("/")).rstrip("/")
    return ["--url", url, "--token", TOKEN, "--quiet", "--visible-timeout", "2", *extra]


async def test_unique_run_counts_match_and_writes_json(tmp_path: Path) -> None:
    app = _app()
    async with TestServer(app) as server:
        out = tmp_path / "summary.json"
        argv = _argv(
            server,
            "--workers",
            "3",
            "--bundles",
            "60",
            "--burst-size",
            "300",
            "--gzip",
            "--json",
            str(out),
        )
        code = await asyncio.to_thread(loadgen.main, argv)
    summary = json.loads(out.read_text())
    assert code == 0
    assert summary["ok"] is True
    assert summary["statuses"] == {"202": summary["bodies"]}
    assert app[GZIPPED][0] == summary["bodies"]
    assert summary["accepted_unique"] == len(app[STORE]) == summary["stored"]
    assert summary["latency_ms"]["p50"] <= summary["latency_ms"]["p99"]


async def test_duplicates_are_counted_once() -> None:
    app = _app()
    async with TestServer(app) as server:
        args = loadgen._parse(
            _argv(
                server,
                "--workers",
                "2",
                "--bundles",
                "80",
                "--dup-ratio",
                "0.5",
                "--burst-size",
                "0",
            )
        )
        summary = await loadgen.run(args)
    assert summary["ok"] is True
    assert summary["accepted_events"] > summary["accepted_unique"] == len(app[STORE])


async def test_lost_events_fail_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    app = _app(drop=3)
    async with TestServer(app) as server:
        argv = _argv(server, "--workers", "1", "--bundles", "5", "--burst-size", "0")
        code = await asyncio.to_thread(loadgen.main, argv)
    assert code == 1
    assert "MISMATCH" in capsys.readouterr().out


async def test_wrong_token_is_reported_by_status() -> None:
    async with TestServer(_app()) as server:
        argv = _argv(server, "--workers", "1", "--bundles", "3")
        argv[argv.index(TOKEN)] = "wrong"
        summary = await loadgen.run(loadgen._parse(argv))
    assert summary["statuses"] == {"401": summary["bodies"]}
    assert summary["accepted_unique"] == 0


async def test_persistence_is_timed_by_the_queue_draining() -> None:
    """With /v1/stats, the run waits for lag 0 and nothing pending; without it, it falls back
    to the /v1/events listing (the tests above)."""
    polls: list[int] = []

    async def stats(request: web.Request) -> web.Response:
        polls.append(1)
        busy = len(polls) < 3  # the "consumer" needs a few polls to drain
        part = {"partition": 0, "lag": 5 if busy else 0, "pending": 0}
        body = {"partitions": [part], "total_lag": part["lag"], "total_pending": 0}
        return web.json_response(body)

    app = _app()
    app.router.add_get("/v1/stats", stats)
    async with TestServer(app) as server:
        args = loadgen._parse(_argv(server, "--workers", "1", "--bundles", "4"))
        summary = await loadgen.run(args)
    assert summary["ok"] is True
    assert len(polls) >= 3
    assert summary["committed_after_s"] is not None
    assert summary["committed_after_s"] >= 0.2  # two 0.1 s sleeps while lag was 5
    assert summary["persisted_events_per_s"] > 0


async def test_unreachable_server_fails_fast_and_says_nothing_was_accepted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = TestServer(_app())
    await server.start_server()
    url = str(server.make_url("/")).rstrip("/")
    await server.close()  # the port is free again: every post is refused
    argv = ["--url", url, "--token", TOKEN, "--quiet", "--duration", "0.3", "--workers", "2"]
    started = asyncio.get_running_loop().time()
    code = await asyncio.to_thread(loadgen.main, argv)
    # no waiting for a queue to drain or events to show when none were accepted
    assert asyncio.get_running_loop().time() - started < 30
    assert code == 1
    out = capsys.readouterr().out
    assert "NOTHING ACCEPTED" in out
    assert "ClientConnectorError" in out


@pytest.mark.parametrize(
    "extra",
    [
        ["--duration", "0"],
        ["--timeout", "-1"],
        ["--bundles", "0"],
        ["--burst-size", "-5"],
        ["--workers", "0"],
        ["--json", "/nonexistent-dir/summary.json"],
    ],
)
def test_bad_arguments_are_refused_before_any_load(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        loadgen.main(["--url", "http://127.0.0.1:1", "--token", TOKEN, *extra])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "leviathan-cp bench: error: " in err
    assert "Traceback" not in err
