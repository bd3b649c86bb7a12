"""`HOST:PORT` listen addresses: one parser for `agent.listen`, `--listen` and the HTTP server."""

from __future__ import annotations

import ipaddress
import re

_HOSTNAME = re.compile(
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
        if host and not _HOSTNAME.match(host):
            raise ValueError("listen address: the host is not an IP address or host name")
        host = host or "0.0.0.0"
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ValueError("listen address: the port must be a number from 0 to 65535")
    port = int(port_text)
    if port > 65535:
        raise ValueError("listen address: the port must be a number from 0 to 65535")
    return host, port
