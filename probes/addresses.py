"""Addresses a probe connects to or listens on, checked the same way at config load and at use.

`parse_listen` reads `HOST:PORT` listen addresses (agent.listen, --listen, the HTTP server, the
C-MOVE storage SCP); `url_problem` refuses an endpoint URL a probe could not connect to.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_LISTEN_HOST = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
SHAPE = "must be HOST:PORT, [IPv6]:PORT or :PORT (all interfaces)"


def parse_listen(listen: str) -> tuple[str, int]:
    """(host, port) to bind; ":PORT" is every IPv4 interface, port 0 any free port.

    Raises ValueError with a message that does not repeat the value."""
    if not isinstance(listen, str) or ":" not in listen:
        raise ValueError(f"listen address {SHAPE}")
    if listen.startswith("["):
        m = re.fullmatch(r"\[([^\]]*)\]:([^:]*)", listen)
        if not m:
            raise ValueError(f"listen address {SHAPE}")
        host, port_text = m.groups()
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                "listen address: the part in brackets is not an IPv6 address"
            ) from None
    else:
        host, _, port_text = listen.rpartition(":")
        if ":" in host:
            raise ValueError("listen address: write an IPv6 address in brackets, [::1]:PORT")
        if host and not _LISTEN_HOST.match(host):
            raise ValueError("listen address: the host is not an IP address or host name")
        host = host or "0.0.0.0"
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ValueError("listen address: the port must be a number from 0 to 65535")
    port = int(port_text)
    if port > 65535:
        raise ValueError("listen address: the port must be a number from 0 to 65535")
    return host, port


# URL hosts (IDNA-encoded): labels may hold an underscore, as some DNS names do
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}\.?$){_LABEL}(?:\.{_LABEL})*\.?$")
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
