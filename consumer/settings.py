"""Settings of the consumer process (every variable is listed in docs/operations.md).

Pipeline position: built once by ``consumer.__main__`` from the environment and passed to
the worker, reader, maintenance and health server. Inherits the storage and stream settings
so env names are declared once.
"""

from __future__ import annotations

import socket

from pydantic import Field, model_validator

from consumer.forwarder.settings import SpiderSettings
from storage.config import StorageSettings
from storage.redisconn import check_url


class ConsumerSettings(SpiderSettings, StorageSettings):
    """Every knob of one consumer process; each field names its environment variable."""

    consumer_name: str = Field(
        default_factory=socket.gethostname, min_length=1, validation_alias="HOSTNAME"
    )
    """This process's consumer name in group ``writers`` (the pod or host name): it labels the
    entries the process holds (its PEL) and its health key. A pod that is replaced gets a
    new name, so it does not resume its old PEL by name: another live consumer XAUTOCLAIMs
    those entries once idle past LEVIATHAN_CONSUMER_CLAIM_IDLE_MS, and the stale name is
    deleted from the group. A container restarted in its pod (or a process on a host) keeps
    its name and reads its own pending entries first, once the writer leases its previous
    run held have expired (LEVIATHAN_CONSUMER_LEASE_S). Live processes need distinct
    names."""
    batch: int = Field(200, ge=1, le=10_000, validation_alias="LEVIATHAN_CONSUMER_BATCH")
    """Most entries per batch, i.e. bundles (or chunks of one) per ``write_batch`` call."""
    batch_bytes: int = Field(
        16 * 1024 * 1024, ge=64 * 1024, validation_alias="LEVIATHAN_CONSUMER_BATCH_BYTES"
    )
    """Most entry bytes held in batches by one process, split evenly over the partitions
    (each reads its share, at least one entry, and asks for no more entries than fit at
    LEVIATHAN_STREAM_ENTRY_MAX_BYTES apiece), so a backlog of large bundles never takes
    the consumer past its memory limit (a batch takes ~36 times its bytes while stored)."""
    block_ms: int = Field(1000, ge=1, le=60_000, validation_alias="LEVIATHAN_CONSUMER_BLOCK_MS")
    """XREADGROUP BLOCK: how long an idle partition reader waits for new entries."""
    claim_idle_ms: int = Field(30_000, ge=100, validation_alias="LEVIATHAN_CONSUMER_CLAIM_IDLE_MS")
    """Entries idle this long are XAUTOCLAIMed; a live consumer refreshes those it holds, and
    re-reads any of its own pending entries this old that it does not hold."""
    max_deliveries: int = Field(5, ge=1, validation_alias="LEVIATHAN_CONSUMER_MAX_DELIVERIES")
    """An entry that crashed its consumer this many times while being written alone (its
    in-flight mark survived) is dead-lettered as ``crashed its consumer N times``; the
    other entries of its batch are stored."""
    lease_s: float = Field(15.0, ge=1, le=600, validation_alias="LEVIATHAN_CONSUMER_LEASE_S")
    """TTL of a partition's writer lease (one writing process per partition). Renewed every
    fifth of it; a holder stops starting writes once it could not renew for half of it,
    and a dead holder's partitions are taken over after it (plus up to one TTL until the
    member list forgets the dead process)."""
    memory_bytes: int = Field(
        448 * 1024 * 1024, ge=16 * 1024 * 1024, validation_alias="LEVIATHAN_CONSUMER_MEMORY_BYTES"
    )
    """Estimated memory the batches being decoded and written may take together (counted
    from their JSON tokens, not their bytes); an entry whose estimate alone is larger
    cannot be decoded within it and is dead-lettered as ``oversized``. Keep it below the
    pod's memory limit minus ~200 MiB."""
    timeout_retries: int = Field(
        3, ge=0, le=100, validation_alias="LEVIATHAN_CONSUMER_TIMEOUT_RETRIES"
    )
    """Retries of a batch whose write hit the database's statement timeout; after them
    the batch is isolated like a data error (the entries that time out alone are
    dead-lettered)."""
    stale_consumer_ms: int = Field(
        3_600_000, ge=1000, validation_alias="LEVIATHAN_CONSUMER_STALE_MS"
    )
    """A group member idle longer than this is removed after its entries were claimed."""
    maintenance_interval_s: int = Field(
        10, ge=1, le=59, validation_alias="LEVIATHAN_CONSUMER_MAINTENANCE_INTERVAL_S"
    )
    """Period of the cron jobs: reclaim, trim, lag metrics, stale consumers."""
    retention_days: float | None = Field(None, gt=0, validation_alias="LEVIATHAN_RETENTION_DAYS")
    """Remove events that arrived more than this many days ago (off when unset); applied
    every five minutes by the consumers' maintenance, see "Retention" in operations.md."""
    health_host: str = Field("0.0.0.0", validation_alias="LEVIATHAN_CONSUMER_HOST")
    """Bind address of the /healthz, /readyz, /metrics server."""
    health_port: int = Field(8001, ge=0, le=65535, validation_alias="LEVIATHAN_CONSUMER_PORT")
    """Port of the health server (0 picks a free port; tests use that)."""
    retry_min_s: float = Field(0.1, gt=0, validation_alias="LEVIATHAN_CONSUMER_RETRY_MIN_S")
    """First backoff after a storage failure; doubles per failure (jittered)."""
    retry_max_s: float = Field(10.0, gt=0, validation_alias="LEVIATHAN_CONSUMER_RETRY_MAX_S")
    """Upper bound of the storage-failure backoff."""
    shutdown_timeout_s: float = Field(
        30.0, gt=0, validation_alias="LEVIATHAN_CONSUMER_SHUTDOWN_TIMEOUT_S"
    )
    """On SIGTERM, how long to wait for the in-flight batch to be written and acked."""
    stall_s: float = Field(60.0, gt=0, validation_alias="LEVIATHAN_CONSUMER_STALL_S")
    """A partition holding entries with no commit for this long is reported stalled."""

    arq_redis_url: str | None = Field(None, validation_alias="LEVIATHAN_ARQ_REDIS_URL")
    """Single-node Redis of arq (health key, cron and admin jobs); default: the stream Redis.
    Required with LEVIATHAN_REDIS_CLUSTER=1, as arq cannot use a cluster."""

    @model_validator(mode="after")
    def _arq_single_node(self) -> ConsumerSettings:
        if self.arq_redis_url is None:
            if self.redis_cluster:
                raise ValueError(
                    "LEVIATHAN_ARQ_REDIS_URL is required with LEVIATHAN_REDIS_CLUSTER=1 "
                    "(arq needs a single Redis node)"
                )
            return self
        try:
            check_url(self.arq_redis_url, cluster=False)
        except ValueError as exc:
            raise ValueError(f"LEVIATHAN_ARQ_REDIS_URL: {exc}") from None
        return self

    @property
    def arq_url(self) -> str:
        """The Redis arq uses: its own node, else the (single-node) stream Redis."""
        return self.arq_redis_url if self.arq_redis_url is not None else self.redis_url

    @model_validator(mode="after")
    def _retry_bounds(self) -> ConsumerSettings:
        if self.retry_min_s > self.retry_max_s:
            raise ValueError(
                "LEVIATHAN_CONSUMER_RETRY_MIN_S must not exceed LEVIATHAN_CONSUMER_RETRY_MAX_S"
            )
        return self

    @property
    def keepalive_s(self) -> float:
        """How often held entries are refreshed (XCLAIM JUSTID): well inside the claim idle.

        Entries held longer than this are refreshed on the next tick, one tick later at the
        latest, so an entry a live consumer works on never reaches half the claim idle.
        """
        return self.claim_idle_ms / 1000 / 4
