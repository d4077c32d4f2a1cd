"""Operator console routes: the static page that polls the read API.

Pipeline position: ingest tier, read side, for humans. ``GET /`` redirects to ``GET
/console``, which serves the page; ``GET /console/{file}`` its script and stylesheet, read
from the installed package (``query/static``) so a wheel install works without a source
tree. These routes carry no auth: the page itself holds nothing secret and asks the operator
for the bearer token (or takes it from the URL fragment ``#token=…`` that ``leviathan-cp
dev`` prints: a fragment is never sent to a server), which it sends on every JSON call it
makes. ``/favicon.ico`` is an empty 204 so a browser's automatic request is not logged as a
failed login.
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
    body = resources.files("query").joinpath("static", name).read_bytes()
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


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/console")


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})


routes = [
    web.get("/", root),
    web.get("/favicon.ico", favicon),
    web.get("/console", console_page),
    web.get("/console/{file}", console_asset),
]
