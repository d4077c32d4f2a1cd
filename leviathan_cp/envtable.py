"""The configuration table of docs/operations.md, generated from the settings classes.

Pipeline position: documentation tooling above both tiers. Every environment name comes
from a settings field's validation alias (StorageSettings, ApiSettings, IngestSettings,
ConsumerSettings, …),
so the table cannot list a variable the code never reads; tests/deploy checks the doc is
current. ``python -m leviathan_cp.envtable`` prints the table.
"""

from __future__ import annotations

import ast
import inspect
import itertools
from dataclasses import dataclass

from pydantic import AliasChoices
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

# Meanings of the shared storage/queue fields (StorageSettings declares no descriptions).
STORAGE_MEANINGS = {
    "backend": "Storage backend: `ndjson` (files, dev) or `postgres` (production).",
    "ndjson_dir": "Directory of the NDJSON partition logs (ndjson backend).",
    "postgres_dsn": "Full PostgreSQL URL; wins over the POSTGRES_* parts.",
    "postgres_host": "PostgreSQL host (when no DSN).",
    "postgres_port": "PostgreSQL port (when no DSN).",
    "postgres_db": "PostgreSQL database (when no DSN).",
    "postgres_user": "PostgreSQL user (when no DSN).",
    "postgres_password": "PostgreSQL password (when no DSN; keep it in the Secret / .env).",
    "postgres_pool_min": "Smallest PostgreSQL connection pool per process.",
    "postgres_pool_max": "Largest PostgreSQL connection pool per process.",
    "redis_url": "Redis holding the partition streams; with LEVIATHAN_REDIS_CLUSTER=1 a "
    "comma-separated list of seed nodes (`redis://` or `rediss://`, user and password).",
    "redis_cluster": "1: the streams live on a Redis Cluster (the URL names seed nodes).",
    "partitions": "Number of stream partitions (same value in every process).",
    "stream_prefix": "Key prefix of the partition streams.",
}


@dataclass(frozen=True)
class EnvVar:
    names: tuple[str, ...]
    default: str
    meaning: str
    tiers: str


def _attribute_docstrings(cls: type) -> dict[str, str]:
    """``field: T = ...`` followed by a string literal, as ConsumerSettings documents fields."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in itertools.pairwise(body):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = " ".join(node.value.value.split())
    return docs


def env_names(info: FieldInfo) -> tuple[str, ...]:
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return tuple(str(c) for c in alias.choices)
    return (str(alias),) if alias else ()


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        return "(host name)" if "gethostname" in repr(info.default_factory) else "(computed)"
    if info.default is None:
        return "—"
    return str(info.default)


def settings_classes() -> dict[str, type[BaseSettings]]:
    from consumer.forwarder.settings import SpiderSettings
    from consumer.settings import ConsumerSettings
    from ingest.settings import IngestSettings
    from storage.config import StorageSettings
    from webcore.settings import ApiSettings

    return {
        "all": StorageSettings,
        # before ingest, whose class inherits these fields (as the query tier's does)
        "ingest, query": ApiSettings,
        "ingest": IngestSettings,
        # before the consumer, whose class inherits these fields
        "consumer, forward": SpiderSettings,
        "consumer": ConsumerSettings,
    }


def collect() -> list[EnvVar]:
    rows: dict[str, EnvVar] = {}
    for tier, cls in settings_classes().items():
        docs = _attribute_docstrings(cls)
        for name, info in cls.model_fields.items():
            names = env_names(info)
            if not names or names[0] in rows:
                continue
            meaning = info.description or docs.get(name) or STORAGE_MEANINGS.get(name, "")
            if not meaning:
                raise LookupError(f"{cls.__name__}.{name} has no description")
            rows[names[0]] = EnvVar(names, _default(info), meaning, tier)
    return list(rows.values())


def all_env_names() -> set[str]:
    return {n for var in collect() for n in var.names}


def markdown() -> str:
    lines = ["| Variable | Default | Read by | Meaning |", "|---|---|---|---|"]
    for var in collect():
        names = " / ".join(f"`{n}`" for n in var.names)
        lines.append(f"| {names} | `{var.default}` | {var.tiers} | {var.meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
