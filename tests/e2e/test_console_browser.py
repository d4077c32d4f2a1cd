"""The operator console in a real headless browser.

Debian's chromium (``apt-get install -y chromium``) driven by Playwright's async API against
an aiohttp app carrying the console and the real query routes over an NDJSON store seeded
with the factories' bundles (Redis: the test database from ``redis_url``). Checks what an
operator sees: seeded attempts, the DAG of the seeded tasks (each box with its task's own
status, arrows sharing a box drawn apart), the chain state, the rate graph filling while
events are stored, the login from the dev banner's ``#token=`` link, and the error for a
wrong token. Screenshots at 1280x800 and 390x844 go to test-artifacts/.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

from ingest.app import HANDLER_ARGS
from ingest.metrics import IngestMetrics
from ingest.settings import IngestSettings
from leviathan_cp.tiers import ingest_app
from query.app import mount
from query.deps import QueryDeps
from storage.config import StorageSettings, create_store
from tests import factories as f
from tests.query.query_support import LAYOUT, PARTITIONS, TOKEN, seed
from webcore.errors import Unauthorized
from webcore.middlewares import error_middleware
from webcore.store_ctx import store_ctx

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@web.middleware
async def bearer_except_console(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The ingest tier's rule: /v1 needs the bearer token, the console page does not."""
    if request.path.startswith("/v1/") and request.headers.get("Authorization") != (
        f"Bearer {TOKEN}"
    ):
        raise Unauthorized("The bearer token is not valid.")
    return await handler(request)


def queue_down_app(settings: StorageSettings, redis: aioredis.Redis) -> web.Application:
    """The console and query routes with a Redis that is down (create_app would refuse to
    start without one, as it must check the partition count first)."""

    app = web.Application(middlewares=[error_middleware(IngestMetrics()), bearer_except_console])
    mount(app, QueryDeps(layout=LAYOUT, redis=lambda: redis))
    app.cleanup_ctx.append(store_ctx(settings))
    return app


def _require_browser() -> Any:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        missing = "playwright is not installed (pip install playwright)"
    else:
        if CHROMIUM.exists():
            return async_playwright
        missing = "/usr/bin/chromium is missing (apt-get install -y chromium)"
    if os.environ.get("LEVIATHAN_REQUIRE_SERVICES") == "1":
        pytest.fail(missing + " (LEVIATHAN_REQUIRE_SERVICES=1: browser tests must run)")
    pytest.skip(missing)


async def _serve(app: web.Application) -> AsyncIterator[str]:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(**HANDLER_ARGS)
    try:
        yield str(server.make_url("/console"))
    finally:
        await server.close()


@pytest.fixture(name="base_url")
async def base_url_fixture(tmp_path: Path, redis_url: str) -> AsyncIterator[str]:
    settings = StorageSettings(backend="ndjson", ndjson_dir=tmp_path / "log", partitions=PARTITIONS)
    store = create_store(settings)
    await store.open()
    try:
        await seed(store)
    finally:
        await store.close()
    # The real ingest app: its auth middleware, its console routes, its query API.
    ingest = IngestSettings(
        token=TOKEN,
        backend="ndjson",
        ndjson_dir=tmp_path / "log",
        partitions=PARTITIONS,
        redis_url=redis_url,
        drain_seconds=0,
    )
    async for url in _serve(ingest_app(ingest)):
        yield url


@pytest.fixture(name="queue_down_url")
async def queue_down_url_fixture(tmp_path: Path, redis_url: str) -> AsyncIterator[str]:
    """Storage up (empty), Redis unreachable: port 9 on loopback has no listener."""
    settings = StorageSettings(backend="ndjson", ndjson_dir=tmp_path / "log", partitions=PARTITIONS)
    down = aioredis.Redis.from_url("redis://127.0.0.1:9/8", socket_connect_timeout=0.5)
    try:
        async for url in _serve(queue_down_app(settings, down)):
            yield url
    finally:
        await down.aclose()


async def _latest_target(console_url: str) -> str:
    """The target of the task updated last, as the read API lists them."""
    api = console_url.rsplit("/", 1)[0] + "/v1/tasks?limit=1000"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as http, http.get(api) as resp:
        tasks = (await resp.json())["tasks"]
    return str(max(tasks, key=lambda t: t["updated_at"] or "")["target"])


async def _login(page: Any, url: str, token: str) -> None:
    await page.goto(url)
    await page.fill("#token", token)
    await page.click("#login button[type=submit]")


async def test_console_shows_seeded_data(base_url: str) -> None:
    async_playwright = _require_browser()
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            external: list[str] = []
            page.on(
                "request",
                lambda r: (
                    None if r.url.startswith(base_url.rsplit("/", 1)[0]) else external.append(r.url)
                ),
            )
            await _login(page, base_url, TOKEN)
            rows = page.locator("#attempts tbody tr")
            await rows.first.wait_for()
            text = await page.locator("#attempts").inner_text()
            for attempt in ("att-1", "att-2", "att-3"):
                assert attempt in text
            failed = page.locator("#attempts tbody tr.row-bad")
            assert await failed.count() >= 1
            assert (await failed.first.locator(".why").inner_text()).strip() != ""
            assert await page.locator("#attempts a[href*='/pull/']").count() >= 1
            await page.locator("#dag g.task").first.wait_for()
            # until the operator picks one, the picker shows the most recently active target
            assert await page.input_value("#target") == await _latest_target(base_url)
            await page.select_option("#target", "leviathan-demo")
            await page.locator("#dag g.task[data-task='task-docs-1']").wait_for()
            assert await page.locator("#dag path.edge").count() >= 2
            await page.locator("#chain li.ok").first.wait_for()
            assert await page.locator("#chain li.bad").count() == 0
            assert await page.locator("#chain li").count() == PARTITIONS  # empty ones too
            assert await page.locator("#partitions tbody tr").count() == PARTITIONS
            assert await page.locator("#conn").inner_text() == "live"
            assert "token" not in page.url
            assert not await page.locator("#login").is_visible()
            await page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)

            phone = await browser.new_page(viewport={"width": 390, "height": 844})
            await _login(phone, base_url, TOKEN)
            await phone.locator("#dag g.task").first.wait_for()
            await phone.locator("#chain li.ok").first.wait_for()
            dag = await phone.locator("#dag").bounding_box()
            assert dag is not None
            assert dag["width"] <= 390, "the DAG must stack its layers on a phone"
            assert await phone.locator("#dag path.edge").count() >= 2
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, f"page scrolls sideways on a phone: {width}px"
            await phone.screenshot(path=str(ARTIFACTS / "console-phone.png"), full_page=True)
            assert external == []
        finally:
            await browser.close()


async def test_wrong_token_is_reported(base_url: str) -> None:
    async_playwright = _require_browser()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await _login(page, base_url, "not-the-token")
            banner = page.locator("#banner")
            await banner.wait_for(state="visible")
            assert "token rejected" in await banner.inner_text()
            assert await page.locator("#login").is_visible()
            assert await page.evaluate("sessionStorage.getItem('leviathan.token')") is None
        finally:
            await browser.close()


async def test_queue_down_and_empty_states(queue_down_url: str) -> None:
    async_playwright = _require_browser()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            await _login(page, queue_down_url, TOKEN)
            queue = page.locator("#queue-state.error")
            await queue.wait_for()
            assert (await queue.inner_text()).startswith("queue unavailable: ")
            assert "Redis" in await queue.inner_text()  # the 503's own detail
            # the connection pill is set once every panel of the poll has answered, which
            # can be after the queue panel shows its error
            await page.wait_for_function(
                "document.getElementById('conn').textContent === 'degraded'", timeout=10_000
            )
            assert "unreachable" in await page.locator("#banner").inner_text()
            await page.locator("#attempts-state.empty").wait_for()
            assert await page.locator("#attempts-state").inner_text() == "no attempts recorded yet"
            assert await page.locator("#tasks-state").inner_text() == "no tasks for this target"
        finally:
            await browser.close()


async def test_fragment_login_rates_plurals_and_task_boxes(base_url: str, tmp_path: Path) -> None:
    async_playwright = _require_browser()
    settings = StorageSettings(backend="ndjson", ndjson_dir=tmp_path / "log", partitions=PARTITIONS)
    store = create_store(settings)
    await store.open()
    held = await store.partitions()
    lone = next(p for p in range(PARTITIONS) if p not in held)
    one = f.attempt_lifecycle("att-lone", "task-lone")
    one["events"] = one["events"][:1]
    await store.write_batch(lone, [f.envelope(one, entry_id="900-0")])
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            sent: list[str] = []
            page.on("request", lambda r: sent.append(r.url))
            # the dev banner's link: logged in at once, the token gone from the address bar
            await page.goto(f"{base_url}#token={TOKEN}")
            await page.locator("#chain li.ok").first.wait_for()
            assert not await page.locator("#login").is_visible()
            assert TOKEN not in page.url
            assert await page.evaluate("sessionStorage.getItem('leviathan.token')") == TOKEN
            assert not [u for u in sent if TOKEN in u]  # no request carried it in a URL
            lone_row = page.locator("#chain li", has_text=f"partition {lone}:")
            assert " · 1 event · " in await lone_row.inner_text()

            # the rate graph fills within seconds while events are being stored
            for n in range(8):
                raw = f.attempt_lifecycle(f"att-load-{n}", "task-load", start=5000 + n)
                await store.write_batch(lone, [f.envelope(raw, entry_id=f"{901 + n}-0")])
                await page.wait_for_timeout(500)
            await page.wait_for_function(
                "/^now [0-9.]+ \\/ [0-9.]+ ev\\/s/.test(document.getElementById('rates')"
                ".textContent)",
                timeout=5_000,  # a few polls after the load, not minutes
            )
            assert await page.locator("#spark polyline.per").get_attribute("points")
            peak = await page.locator("#rates").inner_text()
            assert float(peak.split("peak ")[1].split()[0]) > 0, peak

            # each task box shows the task's own status, not its latest attempt's
            await page.select_option("#target", "leviathan-demo")
            box = page.locator("#dag g.task[data-task='task-tests-2']")
            await box.wait_for()
            task = await store.get_task("task-tests-2")
            assert task is not None
            assert task.task.latest_attempt_status not in (None, task.task.status)
            assert await box.get_attribute("data-status") == task.task.status
            assert await box.locator("text.tstat").text_content() == task.task.status
            # task-docs-1 feeds two tasks: its two arrows leave from different points
            starts = await page.eval_on_selector_all(
                "#dag path.edge[data-from='task-docs-1']",
                "els => els.map(e => e.getAttribute('d').split('C')[0])",
            )
            assert len(starts) == 2
            assert len(set(starts)) == 2, starts
        finally:
            await browser.close()
            await store.close()
