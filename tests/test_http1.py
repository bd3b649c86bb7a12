"""probes.http1 (the HTTP probes' response reader) against h11, httpx's own HTTP/1.1 engine.

Well-formed responses (every framing, bodies split into arbitrary reads) must read exactly as h11
reads them; any bytes at all must end in a result, ProtocolError or EOFError, never another
exception and never a hang. The end-to-end cases over real sockets are in test_http_wire.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probes.http1 import ResponseReader
from probes.net.reasons import ProtocolError

NAMES = [b"Content-Type", b"X-Trace", b"Location", b"Server", b"Vary", b"set-cookie"]
VALUES = st.binary(max_size=20).map(
    lambda b: bytes(c for c in b if 0x20 <= c < 0x7F).strip()
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` in the non-empty pieces that cutting it at `cuts` gives (one read each)."""
    at = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    return [data[a:b] for a, b in zip(at, at[1:], strict=False) if b > a]


def ours(data: bytes, cuts: list[int]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    src = iter(split(data, cuts))
    r = ResponseReader(lambda: next(src, b""), 100 * 1024)  # b"": the peer closed
    status, fields = r.head()
    return status, fields, b"".join(r.body())


def theirs(data: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    conn.receive_data(b"")
    status, fields, body = 0, [], b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Response):
            status, fields = event.status_code, list(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, fields, body


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    status = draw(st.sampled_from([200, 201, 203, 301, 302, 404, 500, 503]))
    fields = draw(st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=6))
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    interim = draw(st.booleans())
    head = b"HTTP/1.1 100 Continue\r\n\r\n" if interim else b""
    head += b"HTTP/1.1 %d Whatever Reason\r\n" % status
    for name, value in fields:
        head += name + b": " + value + b"\r\n"
    if framing == "length":
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    if framing == "close":
        return head + b"Connection: close\r\n\r\n" + body
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
    out = head + b"Transfer-Encoding: chunked\r\n\r\n"
    last = 0
    for cut in [*cuts, len(body)]:
        if cut > last:
            out += b"%x;ext=1\r\n" % (cut - last) + body[last:cut] + b"\r\n"
            last = cut
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


@settings(max_examples=300, deadline=None)
@given(responses(), st.lists(st.integers(0, 10_000), max_size=8))
def test_well_formed_responses_read_as_h11_reads_them(data: bytes, cuts: list[int]) -> None:
    assert ours(data, cuts) == theirs(data)


@settings(max_examples=300, deadline=None)
@given(responses(), st.integers(0, 10_000), st.binary(min_size=1, max_size=4))
def test_any_corruption_ends_in_a_result_or_a_judged_error(
    data: bytes, at: int, junk: bytes
) -> None:
    at %= len(data)
    broken = data[:at] + junk + data[at + len(junk):]
    for sample in (broken, data[:at]):  # corrupted, and cut short
        try:
            ours(sample, [at])
        except (ProtocolError, EOFError):
            pass


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nName : value\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    ],
)
def test_heads_h11_refuses_are_refused(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        ours(head + b"hello", [])
    with pytest.raises(h11.RemoteProtocolError):
        theirs(head + b"hello")


def test_no_body_for_204_and_304_whatever_the_length_says() -> None:
    for status in (204, 304):
        data = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status
        assert ours(data, []) == (status, [(b"content-length", b"5")], b"")


def test_a_head_over_the_limit_is_refused_without_reading_on() -> None:
    data = b"HTTP/1.1 200 OK\r\nX: " + b"a" * 200_000
    src = iter([data[i:i + 4096] for i in range(0, len(data), 4096)])
    r = ResponseReader(lambda: next(src), 100 * 1024)
    with pytest.raises(ProtocolError):
        r.head()
    assert next(src, None) is not None  # stopped before the end of what the peer would send
