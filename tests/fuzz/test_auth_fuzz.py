"""Bearer-token checks under hostile input.

Wrong tokens of every length and every shared prefix are rejected, and the comparison goes
through ``hmac.compare_digest`` for every configured token (checked by patching it, not by
timing). A header value aiohttp decodes with surrogate escapes must be a 401, not a crash.
"""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import FUZZ
from webcore.auth import TokenSet

GOOD = "tok-Zq81xK0pLm3vB7nR2cY5wE9aS4dF6gH1"
OTHER = "second-token-for-rotation"


@pytest.mark.parametrize("cut", [0, 1, len(GOOD) // 2, len(GOOD) - 1])
def test_prefixes_are_rejected(cut: int) -> None:
    assert TokenSet([GOOD]).label_for(GOOD[:cut]) is None


@pytest.mark.parametrize(
    "wrong", [GOOD + "x", GOOD.upper(), " " + GOOD, GOOD[::-1], GOOD[:-1] + "!", GOOD * 2]
)
def test_near_misses_are_rejected(wrong: str) -> None:
    assert TokenSet([GOOD, OTHER]).label_for(wrong) is None


def test_every_configured_token_is_accepted_with_distinct_labels() -> None:
    tokens = TokenSet([GOOD, OTHER])
    labels = {tokens.label_for(GOOD), tokens.label_for(OTHER)}
    assert None not in labels
    assert len(labels) == 2
    assert all(GOOD not in str(label) and OTHER not in str(label) for label in labels)


@FUZZ
@given(
    st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=0x10FFFF, exclude_categories=["Cs"]),
        max_size=200,
    )
)
def test_random_tokens_are_rejected(presented: str) -> None:
    if presented != GOOD:
        assert TokenSet([GOOD]).label_for(presented) is None


def test_comparison_uses_compare_digest_for_every_token(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("webcore.auth.hmac.compare_digest", spy)
    tokens = TokenSet([GOOD, OTHER])
    assert tokens.label_for(GOOD) is not None
    assert tokens.label_for("nope") is None
    # No early exit on a match: both tokens are compared for both requests.
    assert len(calls) == 4
    assert {b for _, b in calls} == {GOOD.encode(), OTHER.encode()}


def test_surrogate_escaped_header_is_rejected() -> None:
    assert TokenSet([GOOD]).label_for(GOOD[:5] + "\udcff") is None
