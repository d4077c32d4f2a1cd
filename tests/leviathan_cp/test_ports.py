"""Tests for leviathan_cp.ports: the free ports every started process listens on."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from leviathan_cp import ports


def test_ephemeral_range_reads_the_kernel_file_and_falls_back(tmp_path: Path) -> None:
    good = tmp_path / "range"
    good.write_text("40000\t50000\n")
    assert ports.ephemeral_range(good) == (40000, 50000)
    bad = tmp_path / "bad"
    bad.write_text("forty\n")
    assert ports.ephemeral_range(bad) == ports.DEFAULT_EPHEMERAL
    assert ports.ephemeral_range(tmp_path / "missing") == ports.DEFAULT_EPHEMERAL


def test_candidates_avoid_the_ephemeral_range_wider_side_first() -> None:
    assert ports.candidate_ranges((32768, 60999)) == [range(10000, 32768), range(61000, 65536)]
    assert ports.candidate_ranges((12000, 20000)) == [range(20001, 65536), range(10000, 12000)]
    assert ports.candidate_ranges((1024, 65535)) == []


def test_free_port_is_outside_the_ephemeral_range_and_bindable() -> None:
    low, high = ports.ephemeral_range()
    for _ in range(20):
        port = ports.free_port()
        assert not low <= port <= high
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_paired_port_has_its_partner_free_and_outside_the_range_too() -> None:
    low, high = ports.ephemeral_range()
    for _ in range(20):
        port = ports.free_port(paired=10000)
        for each in (port, port + 10000):
            assert not low <= each <= high
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", each))


def test_a_port_something_listens_on_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            spare = int(probe.getsockname()[1])
        offers: Iterator[int] = iter([busy, busy, spare])

        def choice(_self: object, _seq: Sequence[int]) -> int:
            return next(offers)

        monkeypatch.setattr(random.SystemRandom, "choice", choice)
        assert ports.free_port() == spare


def test_a_kernel_with_no_port_outside_its_range_still_gets_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ports, "ephemeral_range", lambda: (1024, 65535))
    port = ports.free_port()
    assert 1024 <= port <= 65535
    paired = ports.free_port(paired=10000)
    assert paired + 10000 <= 65535
