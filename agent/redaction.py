"""Secrets never print: a scrubber for free text (log arguments, exception text, error messages)
and a logging filter that applies it to every record.

Free text only. Machine-readable output (the --once JSON, /health, check-config's effective
config) is built from data that holds no secret, or redacted by key (agent.config.loader), never
by searching its text: a one-character password replaced everywhere would corrupt the JSON, and a
password "status" would rename its keys.

In free text a secret of MIN_ANYWHERE characters or more is masked wherever it appears; a shorter
one only as a whole token (not inside a longer word or name), so a password "a" or "status" does
not mangle target names and words in log lines.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "<redacted>"
MIN_ANYWHERE = 8
# A short secret is a whole token when it is not part of a longer word or name: letters, digits
# and _ - . join (target ids such as "status-page" or "a.b"); a sentence's final "." does not.
_BEFORE = r"(?<![A-Za-z0-9_.\-])"
_AFTER = r"(?![A-Za-z0-9_\-])(?!\.[A-Za-z0-9_])"


class Redactor:
    """Masks known secret values (from ${VAR} in secret fields, URL passwords) in free text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._long: tuple[str, ...] = ()
        self._short: re.Pattern[str] | None = None
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if s}
        # longest first, so a secret containing another is masked whole
        long = tuple(sorted((s for s in values if len(s) >= MIN_ANYWHERE), key=len, reverse=True))
        short = sorted((s for s in values if len(s) < MIN_ANYWHERE), key=len, reverse=True)
        pattern = None
        if short:
            alternatives = "|".join(re.escape(s) for s in short)
            pattern = re.compile(f"{_BEFORE}(?:{alternatives}){_AFTER}")
        with self._lock:
            self._long, self._short = long, pattern

    def __bool__(self) -> bool:
        return bool(self._long) or self._short is not None

    def scrub(self, text: str) -> str:
        long, short = self._long, self._short
        for s in long:
            if s in text:
                text = text.replace(s, MASK)
        if short is not None:
            text = short.sub(MASK, text)
        return text

    def scrub_values(self, data: Any) -> Any:
        """A copy of JSON-like data with its string values scrubbed; keys and structure intact."""
        if isinstance(data, dict):
            return {k: self.scrub_values(v) for k, v in data.items()}
        if isinstance(data, list | tuple):
            return [self.scrub_values(v) for v in data]
        if isinstance(data, str):
            return self.scrub(data)
        return data


class _Scrubbed:
    """A log argument that is neither text nor a number, shown as its scrubbed str()/repr()."""

    __slots__ = ("_str", "_repr")

    def __init__(self, value: object, redactor: Redactor) -> None:
        self._str = redactor.scrub(str(value))
        self._repr = redactor.scrub(repr(value))

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return self._repr


class RedactingFilter(logging.Filter):
    """Scrubs a record's arguments, template and exception text, leaving numbers as numbers so
    `%d` and `%.1f` still format; the formatter then builds the line from scrubbed parts."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def _arg(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            return self.redactor.scrub(value)
        return _Scrubbed(value, self.redactor)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.redactor:
            return True
        if isinstance(record.msg, str):
            record.msg = self.redactor.scrub(record.msg)
        else:
            record.msg = _Scrubbed(record.msg, self.redactor)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(self._arg(a) for a in args)
        elif isinstance(args, Mapping):
            record.args = {k: self._arg(v) for k, v in args.items()}
        if record.exc_info:
            text = record.exc_text or "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = self.redactor.scrub(text.rstrip("\n"))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = self.redactor.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.scrub(record.stack_info)
        return True


def install_log_redaction(redactor: Redactor) -> None:
    """Attach the filter to every handler of the root logger (handlers see all records)."""
    root = logging.getLogger()
    for h in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in h.filters):
            h.addFilter(RedactingFilter(redactor))
