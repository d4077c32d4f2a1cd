"""Fuzz settings: small case counts in CI, 10,000 with LEVIATHAN_LONG=1 (bench/RESULTS.md)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

LONG = os.environ.get("LEVIATHAN_LONG") == "1"

settings.register_profile(
    "fuzz",
    max_examples=10_000 if LONG else 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FUZZ = settings.get_profile("fuzz")
