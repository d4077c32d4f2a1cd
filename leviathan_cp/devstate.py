"""What a running ``leviathan-cp dev`` started, for the other commands run beside it.

Pipeline position: development only. ``dev`` holds ``./.leviathan/dev.lock`` for its whole
life (a second ``dev`` in the same folder exits at once instead of starting a second queue
on the same files) and writes ``./.leviathan/dev.json`` (mode 600): its pid, API URL,
queue URL, consumer health port, storage (NDJSON directory or PostgreSQL DSN) and token
file. ``leviathan-cp dlq``, ``verify`` and ``bench`` run in that folder read it, so they
talk to the dev stack rather than to whatever listens on Redis' default port; a variable
set in the environment still wins.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

STATE_FILE = "dev.json"
LOCK_FILE = "dev.lock"


@dataclass(frozen=True, slots=True)
class DevState:
    pid: int
    url: str
    redis_url: str
    queue: str
    consumer_health: str
    data_dir: str  # the NDJSON directory ("" on PostgreSQL)
    token_file: str
    backend: str = "ndjson"
    postgres_dsn: str = ""


def default_base() -> Path:
    return Path.cwd() / ".leviathan"


def write(base: Path, state: DevState) -> None:
    path = base / STATE_FILE
    tmp = path.with_suffix(".tmp")
    # mode 600: on PostgreSQL the file holds the DSN with its password
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(asdict(state), option=orjson.OPT_INDENT_2))
    tmp.replace(path)


def remove(base: Path) -> None:
    (base / STATE_FILE).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _redact(url: str) -> str:
    from leviathan_cp.devqueue import redact

    return redact(url)


def read(base: Path) -> DevState | None:
    """The state of a ``dev`` still running from ``base`` (``None``: none is, or no file)."""
    try:
        data = orjson.loads((base / STATE_FILE).read_bytes())
        state = DevState(**data)
    except (OSError, ValueError, TypeError):
        return None
    return state if _alive(state.pid) else None


def apply(
    command: str, base: Path | None = None, env: MutableMapping[str, str] | None = None
) -> DevState | None:
    """Point storage and queue settings at a running dev stack (unless set already).

    Says so on stderr, so nobody wonders which queue or log a command just used.
    """
    state = read(base or default_base())
    if state is None:
        return None
    target = os.environ if env is None else env
    defaults = {
        "LEVIATHAN_REDIS_URL": state.redis_url,
        "LEVIATHAN_CONTROL_PLANE_BACKEND": state.backend,
    }
    if state.backend == "postgres":
        defaults["POSTGRES_DSN"] = state.postgres_dsn
    else:
        defaults["LEVIATHAN_NDJSON_DIR"] = state.data_dir
    used = [name for name, value in defaults.items() if target.setdefault(name, value) == value]
    if used:
        data = (
            _redact(target.get("POSTGRES_DSN", ""))
            if target["LEVIATHAN_CONTROL_PLANE_BACKEND"] == "postgres"
            else target.get("LEVIATHAN_NDJSON_DIR", "")
        )
        print(
            f"{command}: using the dev stack running here (pid {state.pid}): "
            f"queue {target['LEVIATHAN_REDIS_URL']}, data {data}",
            file=sys.stderr,
        )
    return state
