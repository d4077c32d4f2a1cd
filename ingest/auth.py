"""Bearer token set of the ingest tier (DESIGN §2, §6).

Pipeline position: the auth middleware asks :class:`TokenSet` for the label of a
presented token. Tokens come from the env value, the comma list and a token file that is
re-read whenever its mtime changes (rotation without restart). Comparison uses
``hmac.compare_digest`` against every token so timing does not reveal which one nearly
matched. Only a label (``tok-<sha256[:8]>``) is logged or stored, never a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from pathlib import Path

from ingest.settings import IngestSettings

log = logging.getLogger(__name__)


def token_label(token: str) -> str:
    return "tok-" + hashlib.sha256(token.encode()).hexdigest()[:8]


class TokenSet:
    """Accepted tokens; :meth:`label_for` returns a label or ``None``."""

    def __init__(self, static: list[str], token_file: Path | None = None) -> None:
        # (token bytes, label) pairs, made when a token is loaded rather than per request:
        # encoding every token and hashing the label each time cost ~20 µs per request.
        self._static = _keyed(t for t in static if t)
        self._file = token_file
        self._file_mtime: int | None = None
        self._file_tokens: list[tuple[bytes, str]] = []

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> TokenSet:
        static: list[str] = []
        if settings.token is not None:
            static.append(settings.token.get_secret_value().strip())
        if settings.tokens is not None:
            static.extend(t.strip() for t in settings.tokens.get_secret_value().split(","))
        return cls(static, settings.token_file)

    def _refresh_file(self) -> None:
        if self._file is None:
            return
        try:
            mtime = self._file.stat().st_mtime_ns
        except OSError as exc:
            if self._file_mtime is not None:
                log.warning("token file %s unreadable: %s", self._file, exc.strerror)
            self._file_mtime, self._file_tokens = None, []
            return
        if mtime == self._file_mtime:
            return
        try:
            lines = self._file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("token file %s unreadable: %s", self._file, exc)
            return
        self._file_tokens = _keyed(s for s in (line.strip() for line in lines) if s)
        self._file_mtime = mtime
        log.info("token file %s loaded: %d token(s)", self._file, len(self._file_tokens))

    def _current(self) -> list[tuple[bytes, str]]:
        if self._file is None:
            return self._static
        self._refresh_file()
        return self._static + self._file_tokens

    def usable(self) -> bool:
        """Whether any token would be accepted now (a missing or empty file gives none)."""
        return bool(self._current())

    def label_for(self, presented: str) -> str | None:
        try:
            candidate = presented.encode()
        except UnicodeEncodeError:
            # aiohttp surrogate-escapes header bytes that are not UTF-8; no token is such a
            # string, so this rejects without revealing anything about the tokens.
            return None
        found: str | None = None
        for token, label in self._current():
            # No early exit: every token is compared.
            if hmac.compare_digest(candidate, token) and found is None:
                found = label
        return found


def _keyed(tokens: Iterable[str]) -> list[tuple[bytes, str]]:
    return [(token.encode(), token_label(token)) for token in tokens]
