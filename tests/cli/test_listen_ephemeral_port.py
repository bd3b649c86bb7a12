"""`agent run --listen 127.0.0.1:0` binds a free port and prints the address it bound, in one
parseable line on stdout."""

from __future__ import annotations

import socket

import httpx
import pytest

from tests.cli.common import daemon


def test_port_0_prints_the_bound_address_and_serves_it() -> None:
    with daemon() as (_p, url):
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        assert port > 0
        r = httpx.get(url + "/-/healthy", timeout=5)
        assert r.status_code == 200


def test_two_agents_on_port_0_get_different_ports() -> None:
    with daemon() as (_a, url_a), daemon() as (_b, url_b):
        assert url_a != url_b


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_address_is_bracketed() -> None:
    if not _ipv6_loopback():
        pytest.fail("this machine has no IPv6 loopback (::1)")
    with daemon("--listen", "[::1]:0") as (_p, url):  # the later --listen wins
        assert url.startswith("http://[::1]:"), url
        assert httpx.get(url + "/-/healthy", timeout=5).status_code == 200
