"""The hash-pinned locks (requirements/*.txt) agree with pyproject.toml's dependencies.

CI installs requirements/dev.txt and the image requirements/runtime.txt, both written by
``scripts/lock``; pyproject.toml stays the place where dependencies are declared. These tests
read the three files offline (no resolver, no index) and fail when a dependency was added,
removed or re-ranged in pyproject.toml without re-running ``scripts/lock``: for Linux x86_64
and Python 3.11 (CI and the image), every dependency must be pinned inside its range, and
every pin must trace back, through the lock's own ``# via`` notes, to a dependency that
pyproject.toml still declares.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "leviathan-control-plane (pyproject.toml)"
CONSTRAINT = "-c requirements/runtime.txt"
# CI's and the image's interpreter: CPython 3.11 on Linux x86_64
TARGET = {
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "extra": "",
}


@dataclass
class Pin:
    version: str
    marker: Marker | None
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def parse_lock(text: str) -> dict[str, Pin]:
    """``name==version [; marker] \\`` lines, their ``--hash`` lines and ``# via`` notes."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for raw in text.splitlines():
        line = raw.strip().removesuffix("\\").strip()
        if not line or raw.startswith("#"):
            continue
        if not raw[0].isspace():
            req = Requirement(line)
            spec = list(req.specifier)
            assert len(spec) == 1, f"{line!r}: not pinned to one version"
            assert spec[0].operator == "==", f"{line!r}: not pinned with =="
            current = pins[canonicalize_name(req.name)] = Pin(spec[0].version, req.marker)
        elif current is None:
            raise AssertionError(f"{raw!r} before any requirement")
        elif line.startswith("--hash="):
            current.hashes.append(line.removeprefix("--hash="))
        elif line.startswith("#"):
            note = re.sub(r"^#\s*(via(\s+|$))?", "", line)
            if note:
                current.via.append(note)
    return pins


def declared(pyproject: dict[str, Any], extra: str | None) -> list[Requirement]:
    """pyproject's dependencies (plus an extra's) that apply on the target platform."""
    project = pyproject["project"]
    lines = list(project["dependencies"])
    if extra:
        lines += project["optional-dependencies"][extra]
    reqs = [Requirement(line) for line in lines]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(TARGET)]


def problems(declared_reqs: list[Requirement], pins: dict[str, Pin], lock: str) -> list[str]:
    """What makes ``pins`` a stale lock of ``declared_reqs`` (empty when it is current)."""
    return unpinned(declared_reqs, pins, lock) + unexplained(declared_reqs, pins, lock)


def unpinned(declared_reqs: list[Requirement], pins: dict[str, Pin], lock: str) -> list[str]:
    """Declared dependencies the lock leaves out, or pins outside their declared range."""
    out: list[str] = []
    for req in declared_reqs:
        pin = pins.get(canonicalize_name(req.name))
        if pin is None:
            out.append(f"{lock}: {req} is declared in pyproject.toml but not pinned")
        elif not req.specifier.contains(pin.version, prereleases=True):
            out.append(f"{lock}: {req.name}=={pin.version} is outside {req}")
        elif pin.marker is not None and not pin.marker.evaluate(TARGET):
            out.append(f"{lock}: {req.name} is pinned for other platforms only ({pin.marker})")
    return out


def unexplained(declared_reqs: list[Requirement], pins: dict[str, Pin], lock: str) -> list[str]:
    """Pins without hashes, or that no longer trace back to a declared dependency."""
    out: list[str] = []
    direct = {canonicalize_name(r.name) for r in declared_reqs}
    for name, pin in pins.items():
        if not pin.hashes:
            out.append(f"{lock}: {name} has no --hash")
        parents = [v for v in pin.via if v != CONSTRAINT]
        if not parents:
            out.append(f"{lock}: {name} says nothing about what requires it")
        for parent in parents:
            if parent == PROJECT and name not in direct:
                out.append(f"{lock}: {name} is no longer a dependency in pyproject.toml")
            elif parent != PROJECT and canonicalize_name(parent) not in pins:
                out.append(f"{lock}: {name} is required by {parent}, which is not in the lock")
    return out


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def runtime() -> dict[str, Pin]:
    return parse_lock((ROOT / "requirements" / "runtime.txt").read_text())


@pytest.fixture(scope="module")
def dev() -> dict[str, Pin]:
    return parse_lock((ROOT / "requirements" / "dev.txt").read_text())


def test_runtime_lock_pins_every_runtime_dependency(
    pyproject: dict[str, Any], runtime: dict[str, Pin]
) -> None:
    found = problems(declared(pyproject, None), runtime, "requirements/runtime.txt")
    assert not found, "run scripts/lock:\n" + "\n".join(found)


def test_dev_lock_pins_runtime_and_dev_dependencies(
    pyproject: dict[str, Any], dev: dict[str, Pin]
) -> None:
    found = problems(declared(pyproject, "dev"), dev, "requirements/dev.txt")
    assert not found, "run scripts/lock:\n" + "\n".join(found)


def test_dev_lock_keeps_the_runtime_pins(runtime: dict[str, Pin], dev: dict[str, Pin]) -> None:
    # CI must test the releases the image ships
    differ = {n: (p.version, dev[n].version) for n, p in runtime.items() if n in dev}
    differ = {n: v for n, v in differ.items() if v[0] != v[1]}
    missing = sorted(set(runtime) - set(dev))
    assert not differ, f"runtime vs dev versions differ: {differ}"
    assert not missing, f"pinned in runtime.txt, not in dev.txt: {missing}"


def test_a_changed_pyproject_is_caught(pyproject: dict[str, Any], runtime: dict[str, Pin]) -> None:
    reqs = declared(pyproject, None)
    lock = "runtime.txt"
    added = [*reqs, Requirement("left-pad>=1")]
    assert problems(added, runtime, lock) == [
        f"{lock}: left-pad>=1 is declared in pyproject.toml but not pinned"
    ]
    pinned = runtime["aiohttp"].version
    raised = [Requirement(f"aiohttp>{pinned}") if r.name == "aiohttp" else r for r in reqs]
    assert problems(raised, runtime, lock) == [
        f"{lock}: aiohttp=={pinned} is outside aiohttp>{pinned}"
    ]
    removed = [r for r in reqs if r.name != "filelock"]
    assert problems(removed, runtime, lock) == [
        f"{lock}: filelock is no longer a dependency in pyproject.toml"
    ]


def test_parse_lock_reads_markers_hashes_and_via_notes() -> None:
    text = (
        "# header\n"
        "a==1.0 ; python_full_version < '3.11.3' \\\n"
        "    --hash=sha256:aa \\\n"
        "    --hash=sha256:bb\n"
        "    # via\n"
        "    #   -c requirements/runtime.txt\n"
        "    #   b\n"
        "b==2 \\\n"
        "    --hash=sha256:cc\n"
        f"    # via {PROJECT}\n"
    )
    pins = parse_lock(text)
    assert pins["a"].hashes == ["sha256:aa", "sha256:bb"]
    assert pins["a"].via == [CONSTRAINT, "b"]
    assert pins["a"].marker is not None
    assert not pins["a"].marker.evaluate(TARGET)
    assert pins["b"] == Pin("2", None, ["sha256:cc"], [PROJECT])
