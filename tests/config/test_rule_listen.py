"""`agent.listen` must be HOST:PORT, [IPv6]:PORT or :PORT with a port from 0 to 65535: refused in
one line at load (it used to raise ValueError/OverflowError from the HTTP server at start)."""

import json

import pytest

from agent.config import load_config_text
from agent.config.listen import parse_listen
from tests.config.common import minimal, problems


@pytest.mark.parametrize(
    "listen",
    [
        "9887",
        ":99999",
        ":-1",
        ":http",
        "::1:9887",
        "[::1]",
        "[nothost]:80",
        "a b:80",
        ":",
        "h:1e3",
        ":" + "9" * 400,
    ],
)
def test_bad_listen_addresses_are_refused_in_one_line(listen: str) -> None:
    [p] = problems({"targets": [minimal()], "agent": {"listen": listen}})
    assert p.startswith("t.json:") and ": agent.listen: listen address" in p, p
    assert "\n" not in p


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        (":9887", ("0.0.0.0", 9887)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("[::1]:9887", ("::1", 9887)),
        ("[::]:65535", ("::", 65535)),
        ("localhost:8080", ("localhost", 8080)),
    ],
)
def test_good_listen_addresses_load_and_parse(listen: str, expected: tuple[str, int]) -> None:
    doc = {"targets": [minimal()], "agent": {"listen": listen}}
    assert load_config_text(json.dumps(doc), "t.json", {}).model.agent.listen == listen
    assert parse_listen(listen) == expected


def test_the_http_server_uses_the_same_parser() -> None:
    from agent.http_server import parse_listen as server_parse

    assert server_parse("[::1]:0") == ("::1", 0)
    with pytest.raises(ValueError, match="port must be a number"):
        server_parse(":70000")
