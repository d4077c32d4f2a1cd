"""Settings of the Spider forwarder (docs/operations.md, "Forwarding to Spider").

Pipeline position: :class:`SpiderSettings` is a mixin of the ``LEVIATHAN_SPIDER_*`` fields.
The consumer's settings class inherits it (the forwarder then runs inside the consumer
process when ``LEVIATHAN_SPIDER_ENABLED=true``), and :class:`ForwarderSettings` is the one
settings class of ``leviathan-cp forward``, the forwarder on its own. Nothing is read at
import time.
"""

from __future__ import annotations

import socket

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.config import StorageSettings

INGEST_PATH = "/v1/events/ingest"


class SpiderSettings(BaseSettings):
    """Where and how bundles are forwarded; each field names its environment variable."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    spider_enabled: bool = Field(False, validation_alias="LEVIATHAN_SPIDER_ENABLED")
    """``true``: the consumer process also forwards every bundle to Spider."""
    spider_url: str | None = Field(None, validation_alias="LEVIATHAN_SPIDER_URL")
    """Base URL of the Spider node; bundles are POSTed to ``{url}/v1/events/ingest``."""
    spider_token: SecretStr | None = Field(None, validation_alias="LEVIATHAN_SPIDER_TOKEN")
    """Bearer token sent to Spider (no Authorization header when unset)."""
    spider_timeout_s: float = Field(
        5.0, gt=0, le=300, validation_alias="LEVIATHAN_SPIDER_TIMEOUT_SECONDS"
    )
    """Longest wait for one Spider answer; a timeout is retried like a 5xx."""
    spider_max_backlog: int = Field(50_000, ge=1, validation_alias="LEVIATHAN_SPIDER_MAX_BACKLOG")
    """Unsent bundles kept per partition; beyond it the oldest are skipped (counted, logged)."""
    spider_abandon_after_s: float = Field(
        3600.0, gt=0, validation_alias="LEVIATHAN_SPIDER_ABANDON_AFTER_S"
    )
    """Trimming leaves out a forwarding group over twice the backlog bound behind only once
    no consumer of it read for this long (a forwarder down for a deploy keeps its entries)."""
    spider_group: str = Field("spider", min_length=1, validation_alias="LEVIATHAN_SPIDER_GROUP")
    """Consumer group of the forwarder on every partition stream (never ``writers``)."""
    spider_start: str = Field("earliest", validation_alias="LEVIATHAN_SPIDER_START")
    """Where a newly created group starts: ``earliest`` (all still in the stream) or ``latest``."""
    spider_batch: int = Field(100, ge=1, le=10_000, validation_alias="LEVIATHAN_SPIDER_BATCH")
    """Entries read per XREADGROUP; they are still POSTed one at a time, in order."""
    spider_block_ms: int = Field(
        1000, ge=1, le=60_000, validation_alias="LEVIATHAN_SPIDER_BLOCK_MS"
    )
    """XREADGROUP BLOCK of an idle partition."""
    spider_retry_min_s: float = Field(0.5, gt=0, validation_alias="LEVIATHAN_SPIDER_RETRY_MIN_S")
    """First backoff after a failed POST; doubles per failure (jittered)."""
    spider_retry_max_s: float = Field(30.0, gt=0, validation_alias="LEVIATHAN_SPIDER_RETRY_MAX_S")
    """Upper bound of the POST retry backoff."""
    spider_unready_after_s: float = Field(
        60.0, gt=0, validation_alias="LEVIATHAN_SPIDER_UNREADY_AFTER_S"
    )
    """``leviathan-cp forward``: /readyz answers 503 once Spider has failed this long."""
    spider_health_host: str = Field("0.0.0.0", validation_alias="LEVIATHAN_SPIDER_HOST")
    """``leviathan-cp forward``: bind address of its /healthz, /readyz, /metrics server."""
    spider_health_port: int = Field(8002, ge=0, le=65535, validation_alias="LEVIATHAN_SPIDER_PORT")
    """``leviathan-cp forward``: port of its health server (0 picks a free port)."""

    @field_validator("spider_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("spider_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty value (a blank Secret key) means no token, not ``Bearer ``."""
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("spider_start")
    @classmethod
    def _start(cls, value: str) -> str:
        if value not in ("earliest", "latest"):
            raise ValueError("must be earliest or latest")
        return value

    @model_validator(mode="after")
    def _spider_bounds(self) -> SpiderSettings:
        if self.spider_enabled and self.spider_url is None:
            raise ValueError("LEVIATHAN_SPIDER_ENABLED=true needs LEVIATHAN_SPIDER_URL")
        if self.spider_retry_min_s > self.spider_retry_max_s:
            raise ValueError(
                "LEVIATHAN_SPIDER_RETRY_MIN_S must not exceed LEVIATHAN_SPIDER_RETRY_MAX_S"
            )
        return self

    @property
    def spider_ingest_url(self) -> str:
        if self.spider_url is None:
            raise ValueError("LEVIATHAN_SPIDER_URL is not set")
        return self.spider_url + INGEST_PATH

    @property
    def spider_lease_s(self) -> float:
        """A partition's forwarding lease outlives the renewal period (2 s) plus the longest
        step between two renewals (one read, or one POST and one backoff sleep), so a live
        holder never loses it."""
        return self.spider_block_ms / 1000 + self.spider_timeout_s + self.spider_retry_max_s + 10

    @property
    def spider_stop_s(self) -> float:
        """Time a stopping forwarder may need: one blocked read and one POST."""
        return self.spider_block_ms / 1000 + self.spider_timeout_s + 1

    @property
    def spider_heartbeat_max_age_s(self) -> float:
        """/healthz of ``leviathan-cp forward`` fails when no loop turned for this long."""
        return self.spider_lease_s + 10


class ForwarderSettings(SpiderSettings, StorageSettings):
    """The one settings class of ``leviathan-cp forward``."""

    consumer_name: str = Field(
        default_factory=socket.gethostname, min_length=1, validation_alias="HOSTNAME"
    )
    """Consumer name inside the forwarder's group; pod/host name."""
