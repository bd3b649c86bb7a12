"""Secrets never print: a scrubber for strings and a logging filter that applies it everywhere."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

MASK = "<redacted>"


class Redactor:
    """Replaces every known secret value (from ${VAR} substitution into secret fields) by MASK."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is masked whole. Very short values would
        # mask innocent text everywhere; they are still masked, in place, where they stand alone.
        with self._lock:
            self._secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    def scrub(self, text: str) -> str:
        for s in self._secrets:
            if s in text:
                text = text.replace(s, MASK)
        return text


class RedactingFilter(logging.Filter):
    """Formats the record's message, scrubs it, and freezes it (args cleared)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001
            msg = str(record.msg)
        record.msg = self.redactor.scrub(msg)
        record.args = None
        if record.exc_info:
            import traceback

            record.exc_text = self.redactor.scrub(
                "".join(traceback.format_exception(*record.exc_info))
            )
            record.exc_info = None
        return True


def install_log_redaction(redactor: Redactor) -> None:
    """Attach the filter to every handler of the root logger (handlers see all records)."""
    root = logging.getLogger()
    for h in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter(redactor))
