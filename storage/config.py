"""Storage and queue settings shared by every process, and the backend factory.

Pipeline position: each process's single settings class (``ingest.settings``,
``consumer.settings``) inherits :class:`StorageSettings`, so env names (docs/operations.md) are
declared once. Nothing here reads the environment at import time; pydantic-settings reads
it when ``__main__`` builds the settings object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis

from storage.base import EventStore
from storage.queue import DEFAULT_PREFIX, StreamLayout
from storage.redisconn import check_url, redis_client


class StorageSettings(BaseSettings):
    """Backend, PostgreSQL, NDJSON and Redis stream settings (docs/operations.md, Configuration)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    backend: Literal["ndjson", "postgres"] = Field(
        "ndjson",
        validation_alias=AliasChoices("LEVIATHAN_CONTROL_PLANE_BACKEND", "LEVIATHAN_BACKEND"),
    )
    ndjson_dir: Path = Field(Path(".leviathan/data"), validation_alias="LEVIATHAN_NDJSON_DIR")
    postgres_dsn: SecretStr | None = Field(
        None, validation_alias=AliasChoices("POSTGRES_DSN", "LEVIATHAN_POSTGRES_URL")
    )
    postgres_host: str = Field("127.0.0.1", validation_alias="POSTGRES_HOST")
    postgres_port: int = Field(5432, ge=1, le=65535, validation_alias="POSTGRES_PORT")
    postgres_db: str = Field("leviathan", validation_alias="POSTGRES_DB")
    postgres_user: str = Field("postgres", validation_alias="POSTGRES_USER")
    postgres_password: SecretStr | None = Field(None, validation_alias="POSTGRES_PASSWORD")
    postgres_pool_min: int = Field(1, ge=0, validation_alias="LEVIATHAN_POSTGRES_POOL_MIN")
    postgres_pool_max: int = Field(10, ge=1, validation_alias="LEVIATHAN_POSTGRES_POOL_MAX")

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("LEVIATHAN_REDIS_URL", "REDIS_URL"),
    )
    redis_cluster: bool = Field(False, validation_alias="LEVIATHAN_REDIS_CLUSTER")
    partitions: int = Field(8, ge=1, le=1024, validation_alias="LEVIATHAN_PARTITIONS")
    stream_prefix: str = Field(
        DEFAULT_PREFIX, min_length=1, validation_alias="LEVIATHAN_STREAM_PREFIX"
    )
    # shared: ingest splits bundles into entries of at most this size, and the consumer
    # sizes each XREADGROUP so that a batch stays within its byte bound
    entry_max_bytes: int = Field(
        128 * 1024,
        ge=16 * 1024,
        validation_alias="LEVIATHAN_STREAM_ENTRY_MAX_BYTES",
        description="Largest stream entry ingest writes (a bigger bundle becomes several "
        "entries); consumers size their reads by it. Same value in every process.",
    )

    @model_validator(mode="after")
    def _redis_nodes(self) -> StorageSettings:
        try:
            check_url(self.redis_url, cluster=self.redis_cluster)
        except ValueError as exc:
            raise ValueError(f"LEVIATHAN_REDIS_URL: {exc}") from None
        return self

    @field_validator("postgres_dsn")
    @classmethod
    def _pg_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("postgres://", "postgresql://")
        ):
            raise ValueError("must start with postgresql:// or postgres://")
        return value

    @property
    def layout(self) -> StreamLayout:
        return StreamLayout(prefix=self.stream_prefix, partitions=self.partitions)

    def stream_redis(self, **kwargs: Any) -> Redis:
        """A client for the Redis holding the streams (one node or the cluster)."""
        return redis_client(self.redis_url, cluster=self.redis_cluster, **kwargs)

    def postgres_url(self) -> str:
        """``POSTGRES_DSN`` if given, else built from ``POSTGRES_HOST/PORT/DB/USER/PASSWORD``."""
        if self.postgres_dsn is not None:
            return self.postgres_dsn.get_secret_value()
        auth = quote(self.postgres_user, safe="")
        if self.postgres_password is not None:
            auth += ":" + quote(self.postgres_password.get_secret_value(), safe="")
        return f"postgresql://{auth}@{self.postgres_host}:{self.postgres_port}/{self.postgres_db}"


def create_store(settings: StorageSettings, *, writer: bool = False) -> EventStore:
    """The configured backend, not yet opened (call ``await store.open()``).

    ``writer``: for a process whose work is writing batches (the consumer); a backend
    whose writes are CPU work in this process then runs them on the event loop. A store
    built with ``writer=False`` (the query API, ``leviathan-cp verify``) never runs
    write-side recovery when it opens: recovery belongs to the writer.
    """
    if settings.backend == "postgres":
        from storage.postgres.store import PostgresStore  # asyncpg is only imported when used

        store: EventStore = PostgresStore(
            settings.postgres_url(),
            min_size=settings.postgres_pool_min,
            max_size=settings.postgres_pool_max,
        )
        return store
    from storage.ndjson.store import NdjsonStore

    ndjson: EventStore = NdjsonStore(settings.ndjson_dir, write_on_loop=writer, writer=writer)
    return ndjson


def settings_error_line(exc: Exception) -> str:
    """One line naming the offending variable, for a process that must not start.

    pydantic reports the alias (the env name) in ``loc`` for aliased fields, which is what
    an operator needs to see; the value is left out because it may be a secret.
    """
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return f"configuration error: {exc}"
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(x) for x in err["loc"]) or "settings"
        parts.append(f"{name}: {err['msg']}")
    return "configuration error: " + "; ".join(parts)
