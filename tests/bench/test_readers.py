"""bench.readers: what its readers poll and the figure lines bench.run_all reads.

The whole benchmark (a private stack, three set-ups) runs in ``--quick`` mode in
tests/bench/test_run_all.py with every other benchmark; these tests need no services.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench import readers
from bench.registry import BENCHMARKS

TOKEN = "readers-token"
SEEN: web.AppKey[Counter[str]] = web.AppKey("seen", Counter)


def _app() -> web.Application:
    app = web.Application()
    app[SEEN] = Counter()

    async def answer(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized
        if request.path == "/v1/events/recent":
            raise web.HTTPServiceUnavailable  # counted as what it is, not as a read
        request.app[SEEN][str(request.rel_url)] += 1
        return web.json_response({})

    app.router.add_get("/{tail:.*}", answer)
    return app


async def _poll(count: int, interval: float) -> tuple[Counter[str], dict[str, Any]]:
    """``count`` readers on a fake read API, stopped after 0.5 s: the paths it answered 200
    (with how often) and the readers' figures."""
    app = _app()
    async with TestServer(app) as server:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        base = str(server.make_url("")).rstrip("/")
        result = await asyncio.wait_for(readers.poll(base, TOKEN, count, interval, stop), 10)
    return app[SEEN], result


async def test_readers_poll_every_console_endpoint_until_stopped() -> None:
    seen, result = await _poll(3, 0.0)
    console = {*readers.TOGETHER, *readers.AFTER} - {"/v1/events/recent"}
    assert set(seen) == console
    polls = seen["/v1/stats"]
    assert polls >= 3  # three readers, each at least once
    assert all(count == polls for count in seen.values()), seen  # whole polls only
    assert result["statuses"] == {"200": polls * len(console), "503": polls}
    assert result["requests"] == polls * (len(console) + 1)
    assert result["p99_ms"] is not None
    assert set(result["p50_ms_by_path"]) == {*console, "/v1/events/recent"}


async def test_an_interval_spaces_the_polls() -> None:
    seen, _ = await _poll(2, 30.0)
    # one poll each, then the 30 s pause the stop cuts short
    assert seen["/v1/stats"] == 2


def _run(setup: str, p99: float, rate: float, bad: int = 0) -> dict[str, Any]:
    reads = None if setup == "a" else {"per_s": 45.0, "ok_per_s": 40.0}
    return {
        "setup": setup,
        "p99_ms": p99,
        "accepted_per_s": rate,
        "missing_or_doubled": bad,
        "reads": reads,
    }


def test_report_lines_give_every_registered_figure() -> None:
    runs = [
        _run("a", 10.0, 5000.0),
        _run("b", 15.0, 4000.0),
        _run("c", 11.0, 4900.0),
        _run("a", 20.0, 5200.0),
        _run("b", 25.0, 4200.0),
        _run("c", 21.0, 5100.0, bad=1),
    ]
    out = "\n".join(readers.report({"runs": runs}))
    [bench] = [b for b in BENCHMARKS if b.name == "readers"]
    values = {figure.label: figure.extract(out) for figure in bench.figures}
    assert None not in values.values(), values
    assert values["(a) no readers: ingest p99"] == 15.0  # the median of the rounds
    assert values["(c) readers on query tier: accepted"] == 5000.0
    assert values["(b) readers on ingest: reads answered 200"] == 40.0
    assert values["ingest p99, readers on ingest / no readers (b/a)"] == pytest.approx(1.33)
    assert values["ingest p99, readers on the query tier / no readers (c/a)"] == 1.07
    assert values["accepted events missing or doubled in storage"] == 1.0
