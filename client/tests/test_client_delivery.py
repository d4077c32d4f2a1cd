"""Client against a scripted server: retries, Retry-After, rejections, queue bound, post."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

from fakecp import FakeControlPlane, Scripted, free_port, raw_bundle
from leviathan_client import AsyncClient, Client
from leviathan_client.retry import Backoff
from leviathan_client.transport import Answer


class Recording(Backoff):
    def __init__(self) -> None:
        super().__init__(base=0.01, cap=0.05)
        self.delays: list[float] = []

    def delay(self, attempt: int, outcome: Answer | BaseException) -> float:
        value = super().delay(attempt, outcome)
        self.delays.append(value)
        return value


def test_503_and_429_wait_as_long_as_retry_after_says(fake: FakeControlPlane) -> None:
    fake.script.extend(
        [
            Scripted(503, {"detail": "over the high-water mark"}, {"Retry-After": "1"}),
            Scripted(429, {"detail": "slow down"}, {"Retry-After": "0"}),
        ]
    )
    backoff = Recording()
    with Client(fake.url, "tok", backoff=backoff) as client:
        client.send(raw_bundle("b1"))
        assert client.flush(20)
        assert client.stats.delivered == 1
        assert client.stats.retries == 2
    assert backoff.delays == [1.0, 0.0]
    assert fake.bundle_ids() == ["b1", "b1", "b1"]
    assert fake.requests[0].headers["Authorization"] == "Bearer tok"


def test_5xx_and_408_back_off_with_jitter_under_the_cap(fake: FakeControlPlane) -> None:
    fake.script.extend([Scripted(500), Scripted(502), Scripted(408), Scripted(504)])
    backoff = Recording()
    with Client(fake.url, "tok", backoff=backoff) as client:
        client.send(raw_bundle("b1"))
        assert client.flush(20)
    assert len(backoff.delays) == 4
    assert all(0.0 <= d <= 0.05 for d in backoff.delays)


def test_full_jitter_is_bounded_by_the_exponential_and_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=8.0)
    error = ConnectionRefusedError()
    for attempt in range(12):
        bound = min(8.0, 0.5 * 2**attempt)
        delays = [backoff.delay(attempt, error) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        assert max(delays) > bound / 2  # jittered across the range, not a constant
    huge = Answer(503, retry_after=10_000.0)
    assert backoff.delay(0, huge) == backoff.max_retry_after


def test_connection_refused_until_the_server_comes_up(quick: Backoff) -> None:
    port = free_port()
    with Client(f"http://127.0.0.1:{port}", "tok", backoff=quick, timeout=2) as client:
        for i in range(5):
            client.send(raw_bundle(f"b{i}"))
        assert not client.flush(0.3)
        assert client.stats.retries > 0
        server = FakeControlPlane(port)
        try:
            assert client.flush(20)
        finally:
            server.stop()
    assert server.bundle_ids() == [f"b{i}" for i in range(5)]


def test_a_422_is_rejected_for_good_and_does_not_block_the_rest(
    fake: FakeControlPlane, tmp_path: Path
) -> None:
    errors = [{"loc": ["events", 0, "timestamp"], "msg": "bad timestamp"}]
    fake.reject["bad"] = Scripted(422, {"detail": "invalid bundle", "errors": errors})
    with Client(fake.url, "tok", spool_dir=tmp_path) as client:
        for bundle_id in ("ok-1", "bad", "ok-2"):
            client.send(raw_bundle(bundle_id))
        assert client.flush(20)
        assert (client.stats.delivered, client.stats.rejected) == (2, 1)
    assert fake.bundle_ids() == ["ok-1", "bad", "ok-2"]  # the 422 was never posted again
    rejected = sorted((tmp_path / "rejected").iterdir())
    assert len(rejected) == 2
    kept, answer = (json.loads(p.read_text()) for p in rejected)
    assert kept["bundle_id"] == "bad"
    assert answer == {"status": 422, "answer": {"detail": "invalid bundle", "errors": errors}}
    assert not list(tmp_path.glob("proc-*/*.json"))


def test_without_a_spool_send_blocks_while_the_queue_is_full(fake: FakeControlPlane) -> None:
    fake.gate.clear()  # the server holds every request
    with Client(fake.url, "tok", max_queue=2) as client:
        client.send(raw_bundle("b0"))
        client.send(raw_bundle("b1"))
        third = threading.Thread(target=client.send, args=(raw_bundle("b2"),))
        third.start()
        third.join(0.5)
        assert third.is_alive()  # b0 in flight and b1 queued: no room for b2
        fake.gate.set()
        third.join(10)
        assert not third.is_alive()
        assert client.flush(20)
    assert fake.bundle_ids() == ["b0", "b1", "b2"]


def test_post_waits_and_returns_the_answer(fake: FakeControlPlane) -> None:
    fake.reject["bad"] = Scripted(422, {"detail": "invalid", "errors": [{"loc": ["x"]}]})
    fake.script.append(Scripted(503, {"detail": "busy"}, {"Retry-After": "0"}))
    with Client(fake.url, "tok") as client:
        answer = client.post(raw_bundle("b1", events=3), wait=5)
        assert answer.status == 202
        assert answer.body == {"status": "accepted", "bundle_id": "b1", "ingested": 3}
        refused = client.post(raw_bundle("bad"))
        assert (refused.status, refused.detail, refused.errors) == (
            422,
            "invalid",
            [{"loc": ["x"]}],
        )
    assert fake.requests[0].path == fake.requests[1].path == "/v1/events/ingest?wait=5"
    assert fake.requests[2].path == "/v1/events/ingest"


def test_a_post_with_wait_outlasts_the_request_timeout(fake: FakeControlPlane) -> None:
    fake.delay = 1.5
    with Client(fake.url, "tok", timeout=0.5) as client:
        assert client.post(raw_bundle("b1"), wait=2).status == 202
    assert fake.bundle_ids() == ["b1"]  # answered once, not timed out and posted again


async def test_async_client_has_the_same_methods(fake: FakeControlPlane, tmp_path: Path) -> None:
    async with AsyncClient(fake.url, "tok", spool_dir=tmp_path) as client:
        for i in range(3):
            await client.send(raw_bundle(f"b{i}"))
        assert await client.flush(20)
        answer = await client.post(raw_bundle("p"), wait=1)
        assert answer.ok
        assert client.stats.delivered == 3
    assert fake.bundle_ids() == ["b0", "b1", "b2", "p"]
    # an empty folder is removed on close
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob("proc-*")))
