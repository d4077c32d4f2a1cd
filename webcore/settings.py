"""Settings both HTTP tiers read: tokens, the listen address, Redis timeouts, the drain.

Pipeline position: the base of ``IngestSettings`` (the write front end) and
``QuerySettings`` (the read tier); each process builds its own class once in its
``__main__``. At least one token source is required; the token values never leave this
object except through :mod:`webcore.auth`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from storage.config import StorageSettings
from webcore.roles import parse_entry, parse_list


class ApiSettings(StorageSettings):
    """What every HTTP process reads; every field from the environment name in its alias."""

    token: SecretStr | None = Field(
        None,
        validation_alias="LEVIATHAN_CONTROL_PLANE_TOKEN",
        description="A bearer token accepted by the API: 'TOKEN' (every role) or "
        "'TOKEN ROLE+ROLE' with roles ingest, read, admin.",
    )

    tokens: SecretStr | None = Field(
        None,
        validation_alias="LEVIATHAN_CONTROL_PLANE_TOKENS",
        description="Comma-separated list of further accepted tokens (rotation), each "
        "'TOKEN' or 'TOKEN ROLE+ROLE'.",
    )

    token_file: Path | None = Field(
        None,
        validation_alias="LEVIATHAN_CONTROL_PLANE_TOKEN_FILE",
        description=(
            "File with one token entry per line ('TOKEN' or 'TOKEN ROLE+ROLE'); re-read "
            "when its mtime changes. At start the token variables together must hold at "
            "least one token."
        ),
    )

    host: str = Field(
        "0.0.0.0", validation_alias="LEVIATHAN_API_HOST", description="Listen address."
    )

    port: int = Field(
        8000, ge=0, le=65535, validation_alias="LEVIATHAN_API_PORT", description="Listen port."
    )

    drain_seconds: float = Field(
        5.0,
        ge=0,
        validation_alias="LEVIATHAN_DRAIN_SECONDS",
        description="After SIGTERM: seconds of 503 readiness before the listener closes, "
        "so the load balancer removes the endpoint first.",
    )

    retry_after_seconds: int = Field(
        1,
        ge=1,
        validation_alias="LEVIATHAN_RETRY_AFTER_SECONDS",
        description="Retry-After value sent with every 503.",
    )

    redis_timeout_seconds: float = Field(
        2.0,
        gt=0,
        validation_alias="LEVIATHAN_REDIS_TIMEOUT_SECONDS",
        description="Socket timeout of the process's Redis calls and the ingest publisher's "
        "connect timeout: a pipeline that could not be written within it → 503 (nothing "
        "queued).",
    )

    autonomy_config_path: Path = Field(
        Path("/etc/leviathan/autonomy/dev.yaml"),
        validation_alias="LEVIATHAN_AUTONOMY_CONFIG_PATH",
        description="YAML file whose autonomy_enabled GET /v1/autonomy/status reports "
        "(re-read on every request; a missing file means enabled).",
    )

    @model_validator(mode="after")
    def _one_token(self) -> ApiSettings:
        if self.token is None and self.tokens is None and self.token_file is None:
            raise ValueError(
                "LEVIATHAN_CONTROL_PLANE_TOKEN is required (or LEVIATHAN_CONTROL_PLANE_TOKENS "
                "or LEVIATHAN_CONTROL_PLANE_TOKEN_FILE)"
            )
        try:
            if self.token is not None and self.token.get_secret_value().strip():
                parse_entry(self.token.get_secret_value())
        except ValueError as exc:
            raise ValueError(f"LEVIATHAN_CONTROL_PLANE_TOKEN: {exc}") from None
        try:
            parse_list(self.tokens.get_secret_value() if self.tokens is not None else "")
        except ValueError as exc:
            raise ValueError(f"LEVIATHAN_CONTROL_PLANE_TOKENS: {exc}") from None
        return self
