"""The ``leviathan-client`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakecp import FakeControlPlane, Scripted, free_port, raw_bundle
from leviathan_client import Client
from leviathan_client.cli import main
from leviathan_client.retry import Backoff


def test_post_files_and_ndjson(
    fake: FakeControlPlane, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one.json"
    one.write_text(json.dumps(raw_bundle("b1")))
    many = tmp_path / "many.ndjson"
    many.write_text("\n".join(json.dumps(raw_bundle(f"n{i}")) for i in range(2)))
    fake.reject["n1"] = Scripted(422, {"detail": "invalid", "errors": []})
    code = main(["--url", fake.url, "--token", "tok", "post", str(one), str(many), "--wait", "2"])
    assert code == 1  # n1 was refused
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(x["http"], x["answer"].get("bundle_id")) for x in lines] == [
        (202, "b1"),
        (202, "n0"),
        (422, None),
    ]
    assert fake.requests[0].path.endswith("?wait=2")


def test_spool_status_and_flush(
    fake: FakeControlPlane, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    client = Client(down, "tok", spool_dir=tmp_path, backoff=Backoff(base=0.01, cap=0.02))
    for i in range(4):
        client.send(raw_bundle(f"b{i}"))
    client.close(0)
    assert main(["spool", "status", str(tmp_path)]) == 0
    assert "pending: 4 bundles" in capsys.readouterr().out
    assert main(["--url", fake.url, "--token", "tok", "spool", "flush", str(tmp_path)]) == 0
    assert "delivered 4, rejected 0, left 0" in capsys.readouterr().out
    assert fake.bundle_ids() == ["b0", "b1", "b2", "b3"]
    assert main(["spool", "status", str(tmp_path / "nope")]) == 2
