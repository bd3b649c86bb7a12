"""Endpoint URLs: refuse what a probe could not connect to; find and mask a password in them."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}\.?$){_LABEL}(?:\.{_LABEL})*\.?$")
# scheme://user:password@ : the password is group 2 (up to the last @ before the path)
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*:)([^/?#]*)(@[^@/?#]*)")
MASK = "<redacted>"
# The common case, decided without urlsplit and the IDNA codec (15,000 URLs in a 5,000-target
# config): http(s), an ASCII host name or IPv4 address, an optional port of ASCII digits, then
# the path or nothing. What does not match takes the full check below.
_SIMPLE = re.compile(
    rf"https?://(?=[^/?#]{{1,253}}(?:[/?#]|\Z)){_LABEL}(?:\.{_LABEL})*\.?"
    r"(?::([0-9]{1,5}))?(?:[/?#]|\Z)"
)


def url_problem(url: str) -> str | None:
    """Why a probe could not use this URL, in words that do not repeat it; None if it can."""
    m = _SIMPLE.match(url)
    if m and (m.group(1) is None or 1 <= int(m.group(1)) <= 65535):
        return None
    return full_url_problem(url)


def full_url_problem(url: str) -> str | None:
    """url_problem without the fast path (tests hold the two to the same answers)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        if "Port" in str(e):
            return "the port must be a number from 1 to 65535"
        return "the host is not a valid IPv6 address"
    if port is not None and not 1 <= port <= 65535:
        return "the port must be a number from 1 to 65535"
    host = parts.hostname
    if not host:
        return "the URL has no host"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return "the host is not a valid IPv6 address"
    else:
        try:
            ascii_host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return "the host is not a valid host name"
        if not _HOSTNAME.match(ascii_host):
            return "the host is not a valid host name or IP address"
    return None


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
