"""The worker client stays a standard-library-only distribution of its own."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALLOWED: set[str] = set()  # nothing: the client must drop into any worker image


def test_the_client_declares_no_dependencies() -> None:
    project = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert project["name"] == "leviathan-client"
    assert set(project["dependencies"]) <= ALLOWED
    assert not project.get("optional-dependencies")
    assert (ROOT / "client" / "leviathan_client" / "py.typed").exists()


def test_the_client_imports_without_the_servers_packages() -> None:
    # each of the server's dependencies and packages made unimportable in a fresh interpreter
    blocked = ["aiohttp", "arq", "asyncpg", "redis", "pydantic", "orjson", "storage", "ingest",
               "consumer", "leviathan_cp", "yaml", "filelock"]  # fmt: skip
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "import leviathan_client, leviathan_client.cli, leviathan_client.vocabulary\n"
        "print(leviathan_client.Client.__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Client"
