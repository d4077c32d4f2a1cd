"""The disk spool: durable before send returns, adopted by the next client, bounded."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest
from fakecp import FakeControlPlane, free_port, raw_bundle
from leviathan_client import Client, SpoolFull
from leviathan_client.encode import dumps
from leviathan_client.retry import Backoff
from leviathan_client.spool import pending_files


def test_unsent_bundles_wait_in_the_spool_for_the_next_client(
    tmp_path: Path, quick: Backoff
) -> None:
    port = free_port()
    first = Client(f"http://127.0.0.1:{port}", "tok", spool_dir=tmp_path, backoff=quick)
    for i in range(5):
        first.send(raw_bundle(f"b{i}"))
        assert len(pending_files(tmp_path)) == i + 1  # on disk before send returned
    assert not first.close(0.2)
    assert len(pending_files(tmp_path)) == 5
    server = FakeControlPlane(port)
    try:
        with Client(server.url, "tok", spool_dir=tmp_path) as second:
            second.send(raw_bundle("new"))
            assert second.flush(20)
        assert server.bundle_ids() == ["b0", "b1", "b2", "b3", "b4", "new"]  # oldest first
    finally:
        server.stop()
    assert pending_files(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == ["rejected"]


def _send_and_die(url: str, spool: str) -> None:
    client = Client(url, "tok", spool_dir=spool, backoff=Backoff(base=5, cap=5))
    for i in range(3):
        client.send(raw_bundle(f"dead-{i}"))
    os._exit(0)  # killed: no close(), the lock goes with the process


def test_a_live_clients_folder_is_not_adopted_a_dead_ones_is(
    tmp_path: Path, fake: FakeControlPlane, quick: Backoff
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    alive = Client(down, "tok", spool_dir=tmp_path, backoff=quick)
    try:
        alive.send(raw_bundle("alive-0"))
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=_send_and_die, args=(down, str(tmp_path)))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        assert len(pending_files(tmp_path)) == 4
        with Client(fake.url, "tok", spool_dir=tmp_path) as other:
            assert other.flush(20)
        # the dead process's bundles were adopted and posted; the live client's were not
        assert fake.bundle_ids() == ["dead-0", "dead-1", "dead-2"]
        assert [p.parent for p in pending_files(tmp_path)] == [alive.spool.dir]  # type: ignore[union-attr]
    finally:
        alive.close(0)


def test_the_spool_is_bounded_newest_refused(tmp_path: Path, quick: Backoff) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    one = len(dumps(raw_bundle("b0000")))
    client = Client(url, "tok", spool_dir=tmp_path, max_spool_bytes=3 * one, backoff=quick)
    try:
        for i in range(3):
            client.send(raw_bundle(f"b{i:04d}"))
        with pytest.raises(SpoolFull, match="max_spool_bytes"):
            client.send(raw_bundle("b0003"))
        kept = sorted(p.read_text() for p in pending_files(tmp_path))
        assert len(kept) == 3
        assert all('"b0003"' not in text for text in kept)
    finally:
        client.close(0)


def test_an_idle_client_adopts_the_folder_of_a_process_that_died_later(
    tmp_path: Path, fake: FakeControlPlane
) -> None:
    with Client(fake.url, "tok", spool_dir=tmp_path, adopt_interval=0.1) as client:
        client.send(raw_bundle("first"))
        assert client.flush(20)
        down = f"http://127.0.0.1:{free_port()}"
        proc = multiprocessing.get_context("spawn").Process(
            target=_send_and_die, args=(down, str(tmp_path))
        )
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0
        deadline = time.monotonic() + 30
        while client.stats.delivered < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.flush(20)
    assert fake.bundle_ids() == ["first", "dead-0", "dead-1", "dead-2"]
    assert pending_files(tmp_path) == []
