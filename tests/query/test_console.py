"""Serving tests for the operator console routes (query/console.py).

The page and its assets come from the package; the route table serves only the known files,
with the right content types, no auth, and a CSP that forbids anything from elsewhere.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpClient

from query import console
from tests.ingest.ingest_support import client_for, make_settings


def console_app() -> web.Application:
    app = web.Application()
    app.add_routes(console.routes)
    return app


async def test_page_served_without_auth(aiohttp_client: AiohttpClient) -> None:
    client = await aiohttp_client(console_app())
    resp = await client.get("/console")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    text = await resp.text()
    assert 'src="/console/console.js"' in text
    assert 'href="/console/console.css"' in text
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("console.js", "text/javascript"), ("console.css", "text/css"), ("console.html", "text/html")],
)
async def test_assets_served_from_package(
    aiohttp_client: AiohttpClient, name: str, content_type: str
) -> None:
    client = await aiohttp_client(console_app())
    resp = await client.get(f"/console/{name}")
    assert resp.status == 200
    assert resp.content_type == content_type
    packaged = resources.files("query").joinpath("static", name).read_bytes()
    assert await resp.read() == packaged


@pytest.mark.parametrize("name", ["nope.js", "..%2Fconsole.py", "%2E%2E%2F__init__.py"])
async def test_unknown_files_are_404(aiohttp_client: AiohttpClient, name: str) -> None:
    client = await aiohttp_client(console_app())
    resp = await client.get(f"/console/{name}")
    assert resp.status == 404
    assert (await resp.json())["detail"] == "no such console file"


def test_nothing_fetched_from_outside() -> None:
    """No absolute URL in anything the page loads; the token never goes into a URL."""
    for name in console.ASSETS:
        text = resources.files("query").joinpath("static", name).read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), name
        assert not re.search(r"url\(\s*['\"]?(https?:)?//", text), name
        assert not re.search(r"import\s*\(|fetch\(\s*['\"]https?:", text), name
    js = resources.files("query").joinpath("static", "console.js").read_text()
    assert "sessionStorage" in js
    assert "Authorization" in js
    assert not re.search(r"[?&]token=", js)


async def test_console_is_wired_into_the_ingest_app(aiohttp_client: AiohttpClient) -> None:
    """The real create_app serves the page without a token; the API it polls still needs one."""
    client = await client_for(aiohttp_client, make_settings())
    page = await client.get("/console")
    assert page.status == 200
    assert (await client.get("/console/console.js")).status == 200
    assert (await client.get("/openapi.json")).status == 200
    stats = await client.get("/v1/stats")
    assert stats.status == 401
    assert stats.headers["WWW-Authenticate"] == "Bearer"


async def test_root_redirects_to_the_console_and_favicon_is_not_a_401(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await client_for(aiohttp_client, make_settings())
    root = await client.get("/", allow_redirects=False)
    assert root.status == 302
    assert root.headers["Location"] == "/console"
    icon = await client.get("/favicon.ico")
    assert icon.status == 204
    assert (await client.get("/v1/attempts")).status == 401  # the API itself stays closed


def test_the_page_takes_a_token_from_the_fragment_and_clears_it() -> None:
    """The dev banner's link carries the token in the fragment (never sent to a server)."""
    js = resources.files("query").joinpath("static", "console.js").read_text()
    assert "location.hash" in js
    assert "history.replaceState" in js
