"""docker-compose.yml run for real: build, up, bundles through the proxy, scaling, restarts.

Needs a Docker engine (started here as root when none runs), docker-compose and, where
Docker Hub is out of reach, debootstrap for the stand-in base images (deploy/ci-images/).
Outside CI a machine without them skips; in CI (``CI=true`` or
``LEVIATHAN_REQUIRE_SERVICES=1``) an engine that cannot start fails the run. The stand-ins
test the compose wiring, not the upstream images (docs/operations.md).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import factories as f
from tests.deploy.compose_stack import (
    Engine,
    EngineUnavailable,
    Stack,
    ci_compose_file,
    get_json,
    post_json,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOKEN = "ci-compose-token-" + "x" * 24


def _required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("LEVIATHAN_REQUIRE_SERVICES") == "1"


def _need(what: str) -> None:
    if _required():
        pytest.fail(f"{what} (CI=true / LEVIATHAN_REQUIRE_SERVICES=1: the compose stack must run)")
    pytest.skip(what)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if shutil.which("docker-compose") is None:
        _need("docker-compose is not installed")
    try:
        eng = Engine.ensure(tmp_path_factory.mktemp("dockerd"))
    except EngineUnavailable as exc:
        _need(f"no Docker engine: {exc}")
    try:
        yield eng
    finally:
        eng.stop()


@pytest.fixture(scope="module")
def stack(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("compose")
    env_file = work / "env"
    env_file.write_text(
        f"LEVIATHAN_CONTROL_PLANE_TOKEN={TOKEN}\nPOSTGRES_PASSWORD=ci-{uuid.uuid4().hex}\n"
    )
    engine.build_stand_ins()
    s = Stack(engine, f"leviathanci{os.getpid()}", ci_compose_file(work, env_file))
    try:
        s.compose("build", timeout=600)
        s.compose("up", "-d", timeout=300)
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", "--timeout", "50", timeout=300)


@dataclass
class Load:
    """Bundles posted to the proxy from a thread until stopped (bounded in count and time).

    The count bound is far above what one thread posts in ``seconds``: a load that ran out
    before the scaled replicas were up would leave them nothing to serve.
    """

    url: str
    prefix: str
    limit: int = 100_000
    seconds: float = 240
    accepted: list[dict[str, object]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        for i in range(self.limit):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            bundle = f.attempt_lifecycle(f"{self.prefix}-{i}", f"task-{self.prefix}-{i % 50}")
            status, _ = _post_retrying(self.url, bundle)
            self.statuses.append(status)
            if status in (200, 202):
                self.accepted.append(bundle)

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(60)
        assert not self._thread.is_alive()


def _post_retrying(url: str, bundle: object) -> tuple[int, bytes]:
    """A worker's loop: 503 (draining, backpressure) and 502 (a replica going away while
    nginx resolved it) are retried after a pause, like the workers' own client does."""
    for _ in range(30):
        try:
            status, body = post_json(f"{url}/v1/events/ingest", bundle, TOKEN)
        except OSError:
            status, body = 0, b""
        if status not in (0, 502, 503, 504):
            return status, body
        time.sleep(0.5)
    return status, body


def _stored_ids(stack: Stack, prefix: str) -> set[str]:
    rows = stack.psql(f"SELECT event_id FROM events WHERE event_id LIKE '{prefix}-%'")
    return set(rows)


def _event_ids(bundles: list[dict[str, object]]) -> set[str]:
    return {str(e["event_id"]) for b in bundles for e in b["events"]}  # type: ignore[attr-defined]


def _wait_stored(stack: Stack, prefix: str, expected: set[str], timeout: float) -> set[str]:
    deadline = time.monotonic() + timeout
    stored = _stored_ids(stack, prefix)
    while not expected <= stored and time.monotonic() < deadline:
        time.sleep(1)
        stored = _stored_ids(stack, prefix)
    return stored


def _served(stack: Stack, container: str) -> float:
    """Bundles one ingest replica accepted (its own /metrics counter)."""
    text = stack.scrape(container, 8000)
    pattern = (
        r'^ingest_requests_total\{[^}]*route="/v1/events/ingest"[^}]*status="20[02]"[^}]*\} (\S+)'
    )
    return sum(float(v) for v in re.findall(pattern, text, flags=re.M))


def _answers(stack: Stack, container: str) -> list[str]:
    """Every ingest status line of one replica's /metrics (why it served nothing)."""
    text = stack.scrape(container, 8000)
    return re.findall(r'^ingest_requests_total\{[^}]*route="/v1/events/ingest".*$', text, re.M)


def _written(stack: Stack, container: str) -> float:
    text = stack.scrape(container, 8001)
    match = re.search(r"^leviathan_consumer_events_written_total (\S+)", text, flags=re.M)
    assert match, text[:500]
    return float(match.group(1))


def test_every_service_comes_up_healthy_and_migrate_exits_zero(stack: Stack) -> None:
    for service in ("redis", "postgres", "ingest", "consumer"):
        stack.wait_healthy(service, 1, 60)
    stack.wait_healthy("proxy", 1, 60)
    (migrate,) = stack.containers("migrate")
    state = stack.inspect(migrate)["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 0)
    assert stack.psql("SELECT count(*) FROM events") == ["0"]
    # Only the proxy is published, and only on loopback here.
    for service in ("ingest", "consumer", "redis", "postgres"):
        for cid in stack.containers(service):
            bindings = stack.inspect(cid)["NetworkSettings"]["Ports"] or {}
            assert all(v is None for v in bindings.values()), (service, bindings)


def test_bundles_posted_through_the_proxy_are_stored(stack: Stack) -> None:
    url = stack.proxy_url()
    prefix = f"p{uuid.uuid4().hex[:8]}"
    bundles = [f.attempt_lifecycle(f"{prefix}-{i}", f"task-{prefix}-{i}") for i in range(20)]
    for bundle in bundles:
        status, body = post_json(f"{url}/v1/events/ingest?wait=10", bundle, TOKEN)
        assert status == 200, body  # 200 = the consumer committed it within ?wait=
    assert _stored_ids(stack, prefix) == _event_ids(bundles)
    attempt = get_json(f"{url}/v1/attempts/{prefix}-0", TOKEN)
    assert f"{prefix}-0" in str(attempt)
    status, _ = post_json(f"{url}/v1/events/ingest", bundles[0], "wrong-token")
    assert status == 401


def test_both_tiers_scale_under_load_and_lose_nothing(stack: Stack) -> None:
    url = stack.proxy_url()
    prefix = f"s{uuid.uuid4().hex[:8]}"
    load = Load(url, prefix)
    load.start()
    try:
        stack.compose("up", "-d", "--no-recreate", "--scale", "ingest=3", "--scale", "consumer=2")
        stack.wait_healthy("ingest", 3, 90)
        stack.wait_healthy("consumer", 2, 90)
        # nginx re-resolves the ingest name every 10 s: every replica gets traffic soon after
        # (on a loaded CI host the engine's DNS and the new replicas can take longer to settle)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            served = [_served(stack, c) for c in stack.containers("ingest")]
            if all(n > 0 for n in served):
                break
            time.sleep(2)
    finally:
        load.stop()
    assert len(served) == 3, served
    assert all(n > 0 for n in served), (
        served,
        [_answers(stack, c) for c in stack.containers("ingest")],
    )
    assert set(load.statuses) <= {200, 202}, sorted(set(load.statuses))
    expected = _event_ids(load.accepted)
    assert len(load.accepted) > 20
    assert _wait_stored(stack, prefix, expected, 120) == expected
    written = [_written(stack, c) for c in stack.containers("consumer")]
    assert len(written) == 2, written
    assert sum(written) > 0, written


def test_a_consumer_restart_under_load_loses_nothing(stack: Stack) -> None:
    url = stack.proxy_url()
    prefix = f"r{uuid.uuid4().hex[:8]}"
    load = Load(url, prefix)
    load.start()
    try:
        time.sleep(2)
        stack.compose("restart", "consumer", timeout=200)
        consumers = len(stack.containers("consumer"))
        stack.wait_healthy("consumer", consumers, 90)
        time.sleep(2)
    finally:
        load.stop()
    assert set(load.statuses) <= {200, 202}, sorted(set(load.statuses))
    expected = _event_ids(load.accepted)
    assert expected
    assert _wait_stored(stack, prefix, expected, 120) == expected
    for cid in stack.containers("consumer"):
        assert stack.inspect(cid)["RestartCount"] == 0  # restarted on purpose, not crashed


def test_down_removes_containers_volumes_and_network(engine: Engine, stack: Stack) -> None:
    stack.compose("down", "-v", "--remove-orphans", "--timeout", "50", timeout=300)
    assert stack.resources() == {"container": [], "volume": [], "network": []}


def test_outside_ci_a_missing_engine_skips_and_in_ci_it_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("LEVIATHAN_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception):
        _need("no Docker engine")
    for name, value in (("CI", "true"), ("LEVIATHAN_REQUIRE_SERVICES", "1")):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(pytest.fail.Exception, match="no Docker engine"):
                _need("no Docker engine")


def test_a_dockerd_that_cannot_start_is_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No engine answers and dockerd dies at once (as without iptables): the reason surfaces."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "dockerd").write_text(
        "#!/bin/sh\necho 'failed to start daemon: Error initializing network controller'\nexit 1\n"
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(EngineUnavailable, match="Error initializing network controller"):
        Engine.ensure(tmp_path)
