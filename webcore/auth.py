"""Bearer token set of the ingest tier (docs/operations.md, "Tokens and roles").

Pipeline position: the auth middleware asks :class:`TokenSet` for the :class:`Grant` (label
and roles, :mod:`webcore.roles`) of a presented token. Tokens come from the env value, the
comma list and a token file that is re-read whenever its mtime changes (rotation without
restart). Comparison uses ``hmac.compare_digest`` against every token so timing does not
reveal which one nearly matched. Only a label (``tok-<sha256[:8]>``) is logged or stored,
never a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from webcore.roles import Role, parse_entry
from webcore.settings import ApiSettings

log = logging.getLogger(__name__)


def token_label(token: str) -> str:
    return "tok-" + hashlib.sha256(token.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Grant:
    """Who presented a token (its label, safe to log and store) and what it may do."""

    label: str
    roles: frozenset[Role]


_Entry = tuple[bytes, Grant]


class TokenSet:
    """Accepted tokens; :meth:`grant_for` returns a :class:`Grant` or ``None``.

    ``static`` holds token entries (``TOKEN`` or ``TOKEN ROLE+ROLE``); the file holds one
    entry per line.
    """

    def __init__(self, static: list[str], token_file: Path | None = None) -> None:
        # (token bytes, grant) pairs, made when a token is loaded rather than per request:
        # encoding every token and hashing the label each time cost ~20 µs per request.
        self._static = _keyed(parse_entry(t) for t in static if t.strip())
        self._file = token_file
        self._file_mtime: int | None = None
        self._file_tokens: list[_Entry] = []

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> TokenSet:
        static: list[str] = []
        if settings.token is not None:
            static.append(settings.token.get_secret_value().strip())
        if settings.tokens is not None:
            static.extend(settings.tokens.get_secret_value().split(","))
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
        self._file_tokens = _keyed(_file_entries(self._file, lines))
        self._file_mtime = mtime
        log.info("token file %s loaded: %d token(s)", self._file, len(self._file_tokens))

    def _current(self) -> list[_Entry]:
        if self._file is None:
            return self._static
        self._refresh_file()
        return self._static + self._file_tokens

    def usable(self) -> bool:
        """Whether any token would be accepted now (a missing or empty file gives none)."""
        return bool(self._current())

    def label_for(self, presented: str) -> str | None:
        grant = self.grant_for(presented)
        return None if grant is None else grant.label

    def grant_for(self, presented: str) -> Grant | None:
        try:
            candidate = presented.encode()
        except UnicodeEncodeError:
            # aiohttp surrogate-escapes header bytes that are not UTF-8; no token is such a
            # string, so this rejects without revealing anything about the tokens.
            return None
        found: Grant | None = None
        for token, grant in self._current():
            # No early exit: every token is compared.
            if hmac.compare_digest(candidate, token) and found is None:
                found = grant
        return found


def _file_entries(path: Path, lines: list[str]) -> Iterable[tuple[str, frozenset[Role]]]:
    """The file's entries (blank lines ignored); a malformed line is skipped with a warning."""
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        try:
            yield parse_entry(text)
        except ValueError as exc:
            log.warning("token file %s line %d skipped: %s", path, number, exc)


def _keyed(entries: Iterable[tuple[str, frozenset[Role]]]) -> list[_Entry]:
    return [(token.encode(), Grant(token_label(token), roles)) for token, roles in entries]
