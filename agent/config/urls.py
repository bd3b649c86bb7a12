"""Endpoint URLs: find and mask a password in them (url_problem, which refuses a URL a probe
could not connect to, lives with the probes in probes.addresses)."""

from __future__ import annotations

import re

from probes.addresses import url_problem

__all__ = ["MASK", "redact_url", "url_password", "url_problem"]

# scheme://user:password@ : the password is group 2 (up to the last @ before the path)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*:)([^/?#]*)(@[^@/?#]*)")
MASK = "<redacted>"


def url_password(url: str) -> str | None:
    """The password of `scheme://user:password@host`, if the URL carries one."""
    if "@" not in url:
        return None
    m = _USERINFO.match(url)
    return m.group(2) if m and m.group(2) else None


def redact_url(url: str) -> str:
    """The URL with its password (if any) replaced by <redacted>."""
    if "@" not in url:
        return url
    return _USERINFO.sub(lambda m: m.group(1) + MASK + m.group(3), url, count=1)
