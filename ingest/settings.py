"""Settings of the ingest process (docs/operations.md), built once in ``ingest.__main__``.

Pipeline position: everything the write front end needs besides what it inherits: the
tokens, listen address and Redis timeouts every HTTP tier reads (:mod:`webcore.settings`)
and the shared storage/queue settings.
"""

from __future__ import annotations

from pydantic import Field

from webcore.settings import ApiSettings

MIB = 1024 * 1024


class IngestSettings(ApiSettings):
    """Ingest tier settings; every field is read from the environment name in its alias."""

    serve_reads: bool = Field(
        True,
        validation_alias="LEVIATHAN_INGEST_SERVE_READS",
        description="Serve the read API, the console and /openapi.json beside the ingest "
        "endpoint (one URL for everything, as the original); false when the query tier "
        "(leviathan-cp query) serves reads on its own.",
    )

    max_body_bytes: int = Field(
        64 * MIB,
        ge=1024,
        validation_alias="LEVIATHAN_MAX_BODY_BYTES",
        description="Largest accepted body after decompression (413 above).",
    )
    max_events: int = Field(
        100_000,
        ge=1,
        validation_alias="LEVIATHAN_MAX_EVENTS",
        description="Most events accepted in one bundle (413 above).",
    )
    queue_high_water: int = Field(
        1_000_000,
        ge=1,
        validation_alias="LEVIATHAN_QUEUE_HIGH_WATER",
        description="Total consumer-group lag above which ingest answers 503.",
    )
    queue_high_water_bytes: int = Field(
        512 * MIB,
        ge=MIB,
        validation_alias="LEVIATHAN_QUEUE_HIGH_WATER_BYTES",
        description="Redis used_memory above which ingest answers 503 (at most 80% of "
        "Redis' maxmemory when that is set).",
    )
    max_event_bytes: int = Field(
        8 * MIB,
        ge=1024,
        validation_alias="LEVIATHAN_MAX_EVENT_BYTES",
        description="Largest single event, measured as its normalised JSON (413 naming the "
        "event's index above): a stream entry holds at least one whole event.",
    )
    max_inflight_bytes: int = Field(
        320 * MIB,
        ge=MIB,
        validation_alias="LEVIATHAN_INGEST_MAX_INFLIGHT_BYTES",
        description="Memory budget of one ingest process for request bodies being read, "
        "inflated, parsed and encoded, charged as bytes arrive and by an estimate of the "
        "parse before it runs; a request that does not fit waits, then gets 503.",
    )
    max_request_bytes: int = Field(
        320 * MIB,
        ge=MIB,
        validation_alias="LEVIATHAN_INGEST_MAX_REQUEST_BYTES",
        description="Most of the in-flight budget one request may hold (at most "
        "LEVIATHAN_INGEST_MAX_INFLIGHT_BYTES): a body whose estimated parse needs more is "
        "refused with 413 before it is parsed.",
    )
    inflight_wait_seconds: float = Field(
        5.0,
        ge=0,
        validation_alias="LEVIATHAN_INGEST_INFLIGHT_WAIT_SECONDS",
        description="Longest wait for room in the in-flight budget before answering 503.",
    )
    redis_min_replica_acks: int = Field(
        0,
        ge=0,
        le=16,
        validation_alias="LEVIATHAN_REDIS_MIN_REPLICA_ACKS",
        description="Replicas that must hold a group-committed pipeline (WAIT) before its "
        "requests get 2xx; fewer in time is a 503. 0: do not wait (a single node).",
    )
    publish_max_batch: int = Field(
        512,
        ge=1,
        validation_alias="LEVIATHAN_PUBLISH_MAX_BATCH",
        description="Most XADDs sent in one pipeline by the group-commit publisher.",
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        validation_alias="LEVIATHAN_BODY_TIMEOUT_SECONDS",
        description="Longest time a request body may take to arrive (408 and close above).",
    )
    redis_reply_wait_seconds: float = Field(
        30.0,
        gt=0,
        validation_alias="LEVIATHAN_REDIS_REPLY_WAIT_SECONDS",
        description="Once a pipeline of XADDs has been written to Redis, how long ingest "
        "waits for its replies; exceeded → 504 (the bundle may or may not be queued).",
    )
    lag_cache_seconds: float = Field(
        1.0,
        ge=0,
        validation_alias="LEVIATHAN_LAG_CACHE_SECONDS",
        description="How long a measured queue lag is reused before it is measured again.",
    )

    default_wait_seconds: float = Field(
        0.0,
        ge=0,
        le=30,
        validation_alias="LEVIATHAN_INGEST_DEFAULT_WAIT_SECONDS",
        description="Every ingest waits this long for storage as if ?wait= had been given "
        "(an explicit ?wait= wins); 0 turns it off.",
    )

    @property
    def request_share(self) -> int:
        """One request's share of the in-flight budget."""
        return min(self.max_request_bytes, self.max_inflight_bytes)
