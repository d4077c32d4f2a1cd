"""``leviathan-cp <command> --help`` for every command, in an empty environment.

The commands come from the dispatcher's own table, so a new subcommand is covered without
touching this file. Each runs as a real process with no variables at all (no token, no
Redis, no HOME) in a folder where a ``dev`` seems to run (a ``dev.json`` naming this live
process): help must come first, exit 0, be plain text, and start nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from leviathan_cp.cli import COMMANDS, version

pytestmark = pytest.mark.slow

RAW_MARKUP = re.compile(r"``|:(mod|func|class|meth|data):`")


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leviathan_cp", *args],
        cwd=cwd,
        env={},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def folder_with_dev(tmp_path: Path) -> Path:
    state = tmp_path / ".leviathan" / "dev.json"
    state.parent.mkdir()
    state.write_bytes(
        orjson.dumps(
            {
                "pid": os.getpid(),
                "url": "http://127.0.0.1:1",
                "redis_url": "redis://127.0.0.1:1/0",
                "queue": "redis-server",
                "consumer_health": "http://127.0.0.1:1",
                "data_dir": str(tmp_path / "data"),
                "token_file": str(tmp_path / "token"),
            }
        )
    )
    return tmp_path


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_helps_without_configuration(folder_with_dev: Path, command: str) -> None:
    done = _run(folder_with_dev, command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no banner, no settings error, no server log
    assert done.stdout.startswith(f"usage: leviathan-cp {command}")
    assert not RAW_MARKUP.search(done.stdout), done.stdout
    assert "using the dev stack" not in done.stdout
    assert not (folder_with_dev / ".leviathan" / "data").exists()  # nothing created


def test_top_level_help_and_version(tmp_path: Path) -> None:
    done = _run(tmp_path, "--help")
    assert done.returncode == 0
    for name, command in COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(command.summary)}$", done.stdout, re.M)
    shown = _run(tmp_path, "--version")
    assert shown.returncode == 0
    assert shown.stdout == f"leviathan-cp {version()}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version())
