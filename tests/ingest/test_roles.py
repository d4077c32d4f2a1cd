"""Token roles: parsing, the route marker, 403s, and invalidate's label and backpressure."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from ingest.app import HANDLER_ARGS
from ingest.metrics import IngestMetrics
from leviathan_cp.tiers import ingest_app
from storage.config import create_store, settings_error_line
from storage.envelope import decode
from storage.queue import resolve
from tests.ingest.ingest_support import LAYOUT, ClientFactory, bundle_body, make_settings
from tests.query.query_support import seed
from webcore.auth import TokenSet, token_label
from webcore.middlewares import auth_middleware, error_middleware
from webcore.roles import ALL_ROLES, Role, parse_entry, parse_list, required_role, requires

WORKER, READER, ADMIN, PLAIN = "tok-worker-1", "tok-reader-1", "tok-admin-1", "tok-plain-1"
ENTRIES = f"{WORKER} ingest, {READER} read,{ADMIN} admin+read, {PLAIN}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_entries_parse_roles_and_plain_tokens_keep_every_role() -> None:
    assert parse_entry("abc") == ("abc", ALL_ROLES)
    assert parse_entry("  abc\tread+ADMIN ") == ("abc", frozenset({Role.READ, Role.ADMIN}))
    assert [t for t, _ in parse_list(ENTRIES)] == [WORKER, READER, ADMIN, PLAIN]
    with pytest.raises(ValueError, match="unknown token role 'write'") as bad:
        parse_entry("sekrit write")
    assert "sekrit" not in str(bad.value)
    with pytest.raises(ValueError, match="TOKEN ROLE"):
        parse_entry("sekrit read admin")


def test_a_bad_role_in_the_env_stops_start_up_naming_the_variable() -> None:
    with pytest.raises(ValidationError) as exc:
        make_settings(token=None, tokens="sekrit-1 read, sekrit-2 reed")
    line = settings_error_line(exc.value)
    assert "LEVIATHAN_CONTROL_PLANE_TOKENS" in line
    assert "'reed'" in line
    assert "sekrit" not in line
    with pytest.raises(ValidationError, match="LEVIATHAN_CONTROL_PLANE_TOKEN:"):
        make_settings(token="sekrit nobody")


def test_token_file_lines_carry_roles_and_a_bad_line_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens"
    path.write_text("alpha read\n\nbeta ingest+bogus\ngamma\n")
    tokens = TokenSet([], path)
    alpha, gamma = tokens.grant_for("alpha"), tokens.grant_for("gamma")
    assert alpha is not None
    assert alpha.roles == {Role.READ}
    assert gamma is not None
    assert gamma.roles == ALL_ROLES
    assert tokens.grant_for("beta") is None
    assert "line 3 skipped" in caplog.text
    assert "beta" not in caplog.text


def test_unmarked_routes_default_to_read_for_get_and_admin_otherwise() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    assert required_role(handler, "GET") is Role.READ
    assert required_role(handler, "HEAD") is Role.READ
    assert required_role(handler, "POST") is Role.ADMIN
    assert required_role(handler, "DELETE") is Role.ADMIN
    assert required_role(requires(Role.INGEST)(handler), "POST") is Role.INGEST


async def test_middleware_applies_route_markers_and_defaults(
    aiohttp_client: ClientFactory,
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def recorded(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(
        middlewares=[
            error_middleware(IngestMetrics()),
            auth_middleware(TokenSet(ENTRIES.split(","))),
        ]
    )
    app.add_routes(
        [
            web.get("/v1/thing", ok),
            web.post("/v1/thing", ok),
            web.post("/v1/record", requires(Role.INGEST)(recorded)),
        ]
    )
    client: TestClient[web.Request, web.Application] = await aiohttp_client(app)
    assert (await client.get("/v1/thing", headers=bearer(READER))).status == 200
    denied = await client.post("/v1/thing", headers=bearer(READER))
    assert denied.status == 403
    detail = (await denied.json())["detail"]
    assert "admin role" in detail
    assert token_label(READER) in detail
    assert READER not in detail
    assert (await client.post("/v1/thing", headers=bearer(ADMIN))).status == 200
    assert (await client.post("/v1/record", headers=bearer(WORKER))).status == 200
    assert (await client.post("/v1/record", headers=bearer(ADMIN))).status == 403
    assert (await client.get("/v1/thing", headers=bearer(WORKER))).status == 403
    # unknown paths and methods keep their own answers, whatever the token's roles
    assert (await client.post("/v1/nowhere", headers=bearer(READER))).status == 404
    assert (await client.delete("/v1/thing", headers=bearer(WORKER))).status == 405
    assert (await client.get("/v1/thing", headers=bearer("nope"))).status == 401


async def _app_client(
    tmp_path: Path, redis_url: str, aiohttp_client: ClientFactory, **overrides: object
) -> tuple[TestClient[web.Request, web.Application], aioredis.Redis]:
    settings = make_settings(
        token=None, tokens=ENTRIES, ndjson_dir=tmp_path / "log", redis_url=redis_url, **overrides
    )
    store = create_store(settings)
    await store.open()
    await seed(store)
    await store.close()
    redis = aioredis.Redis.from_url(redis_url)
    server = TestServer(ingest_app(settings, redis=redis))
    await server.start_server(**HANDLER_ARGS)
    return await aiohttp_client(server), redis


@pytest.mark.integration
async def test_roles_in_the_ingest_app(
    tmp_path: Path, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    client, redis = await _app_client(tmp_path, redis_url, aiohttp_client)
    invalidate = "/v1/attempts/att-3/invalidate"
    # a worker's token posts bundles and nothing else
    posted = await client.post("/v1/events/ingest", json=bundle_body(), headers=bearer(WORKER))
    assert posted.status == 202, await posted.text()
    read = await client.get("/v1/attempts", headers=bearer(WORKER))
    assert read.status == 403
    assert "read role" in (await read.json())["detail"]
    no = await client.post(invalidate, json={"reason": "r"}, headers=bearer(WORKER))
    assert no.status == 403
    # a reader reads (the console's calls) but neither posts nor invalidates
    for path in ("/v1/attempts", "/v1/stats", "/v1/events/verify", "/v1/tasks"):
        assert (await client.get(path, headers=bearer(READER))).status == 200, path
    assert (
        await client.post("/v1/events/ingest", json=bundle_body(), headers=bearer(READER))
    ).status == 403
    assert (
        await client.post(invalidate, json={"reason": "r"}, headers=bearer(READER))
    ).status == 403
    # the plain token keeps every role
    assert (await client.get("/v1/attempts", headers=bearer(PLAIN))).status == 200
    # an admin invalidates, and the event's envelope names the admin's token label
    done = await client.post(invalidate, json={"reason": "reverted"}, headers=bearer(ADMIN))
    assert done.status == 202, await done.text()
    stream = LAYOUT.stream(LAYOUT.partition_of("bundle-att-3"))
    envs = [decode(i.decode(), f) for i, f in await resolve(redis.xrange(stream))]
    [env] = [e for e in envs if e.bundle.events[0].event_type == "attempt.invalidated"]
    assert env.token_label == token_label(ADMIN)
    await redis.aclose()


@pytest.mark.integration
async def test_invalidate_is_refused_over_the_high_water_mark(
    tmp_path: Path, redis_url: str, aiohttp_client: ClientFactory
) -> None:
    client, redis = await _app_client(tmp_path, redis_url, aiohttp_client, queue_high_water=1)
    stream = LAYOUT.stream(LAYOUT.partition_of("bundle-att-3"))
    for i in range(3):  # no consumer group yet: the lag is the stream length
        await resolve(redis.xadd(LAYOUT.stream(0), {b"filler": str(i).encode()}))
    before = await resolve(redis.xlen(stream))
    resp = await client.post(
        "/v1/attempts/att-3/invalidate", json={"reason": "r"}, headers=bearer(ADMIN)
    )
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert "high-water" in (await resp.json())["detail"]
    assert await resolve(redis.xlen(stream)) == before
    await redis.aclose()
