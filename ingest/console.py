"""Operator console routes (issue 8): the static page that polls the read API.

Pipeline position: ingest tier, read side, for humans. ``GET /console`` serves the page and
``GET /console/{file}`` its script and stylesheet, read from the installed package
(``ingest/static``) so a wheel install works without a source tree. These routes carry no
auth: the page itself holds nothing secret and asks the operator for the bearer token, which
it sends on every JSON call it makes.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

# Only these files are served; anything else under /console/ is a 404, so no path from the
# request ever reaches the filesystem.
ASSETS = {
    "console.html": "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
}
# The page loads nothing from elsewhere; the policy makes a stray external URL fail loudly.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def _asset(name: str) -> web.Response:
    body = resources.files("ingest").joinpath("static", name).read_bytes()
    return web.Response(
        body=body,
        content_type=ASSETS[name],
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


async def console_page(request: web.Request) -> web.Response:
    return _asset("console.html")


async def console_asset(request: web.Request) -> web.Response:
    name = request.match_info["file"]
    if name not in ASSETS:
        raise web.HTTPNotFound(
            text='{"detail":"no such console file"}', content_type="application/json"
        )
    return _asset(name)


routes = [
    web.get("/console", console_page),
    web.get("/console/{file}", console_asset),
]
