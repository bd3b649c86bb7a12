"""probes.http_timing on the wire: the bytes it sends and the answers it reads, against real
sockets on loopback (127.0.0.1 and ::1) that answer with exact bytes.

Covers what the HTTP path (probes.net, probes.http1) must get right that probe tests do not pin:
body framings (Content-Length, chunked, read-until-close, 1xx before the answer), the request
line and headers (Host with IPv6 literal and port, target kept as given, basic credentials,
Connection: close), redirects (relative and absolute Location), and the failure reasons of
broken answers.
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from probes.base import Deadline, Phases, ProbeError, Reason
from probes.http_timing import Headers, HttpResponse, _hop, timed_get
from probes.specs import HttpEndpoint

Answer = Callable[[bytes], bytes]  # the request's bytes → the response's bytes


class RawPeer:
    """Accepts connections on `host`; for each, reads the request head, answers with
    `answer(request)` and closes. Records the requests."""

    def __init__(self, answer: Answer, host: str = "127.0.0.1") -> None:
        self.answer = answer
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(16)
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="raw-http-peer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                buf = b""
                try:
                    while b"\r\n\r\n" not in buf and len(buf) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                    self.requests.append(buf)
                    conn.sendall(self.answer(buf))
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@contextmanager
def peer(answer: Answer | bytes, host: str = "127.0.0.1") -> Iterator[RawPeer]:
    p = RawPeer(answer if callable(answer) else (lambda _req: answer), host)
    try:
        yield p
    finally:
        p.close()


def get(url: str, ep: HttpEndpoint | None = None, **kw: Any) -> HttpResponse:
    return timed_get(ep or HttpEndpoint(url), url, Deadline(5), Phases(), **kw)


def head_lines(request: bytes) -> list[str]:
    return request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")


def header(request: bytes, name: str) -> str | None:
    for line in head_lines(request)[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


JSON = b'{"status":"UP"}'


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" + JSON,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n"
        + JSON[:5] + b"\r\na\r\n" + JSON[5:] + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + JSON,  # ends when the peer closes
        b"HTTP/1.0 200 OK\r\n\r\n" + JSON,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" + JSON,
    ],
    ids=["content-length", "chunked", "until-close", "http-1.0", "1xx-first"],
)
def test_every_body_framing_gives_the_whole_body(answer: bytes) -> None:
    with peer(answer) as p:
        phases = Phases()
        url = f"http://127.0.0.1:{p.port}/health"
        rsp = timed_get(HttpEndpoint(url), url, Deadline(5), phases)
    assert (rsp.status, rsp.body, rsp.size) == (200, JSON, len(JSON))
    assert {"connect", "first_byte", "transfer"} <= set(phases.values)
    assert "dns" not in phases.values  # an IP literal is not looked up


def test_the_request_line_and_headers() -> None:
    with peer(b"HTTP/1.1 204 No Content\r\n\r\n") as p:
        url = f"http://127.0.0.1:{p.port}/a%2Fb/c d?q=%41&x=1#frag"
        headers = (("X-API-Key", "k-1"), ("accept", "application/json"))
        rsp = get(url, HttpEndpoint(url, headers, username="monitor", password="pa:ss wörd"))
        req = p.requests[0]
    assert rsp.status == 204
    # %-escapes kept as given, a space escaped, the fragment never sent
    assert head_lines(req)[0] == "GET /a%2Fb/c%20d?q=%41&x=1 HTTP/1.1"
    assert header(req, "Host") == f"127.0.0.1:{p.port}"
    assert header(req, "X-API-Key") == "k-1"
    assert header(req, "Accept") == "application/json"  # the endpoint's replaces ours
    token = base64.b64encode("monitor:pa:ss wörd".encode()).decode()
    assert header(req, "Authorization") == f"Basic {token}"
    assert header(req, "Connection") == "close"  # one request per connection
    assert header(req, "Accept-Encoding") is None  # bodies come as they are
    assert header(req, "User-Agent") == "pacs-health-agent"


def test_ipv6_literal_is_dialed_and_bracketed_in_host() -> None:
    with peer(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" + JSON, host="::1") as p:
        rsp = get(f"http://[::1]:{p.port}/health")
        req = p.requests[0]
    assert rsp.body == JSON
    assert header(req, "Host") == f"[::1]:{p.port}"


def test_default_port_is_not_written_in_host() -> None:
    # 80 and 443 cannot be bound here: the Host header the probe would send for them
    assert _hop("http://Example.org:80/x").authority == "example.org"
    assert _hop("https://[fe80::1]/").authority == "[fe80::1]"
    assert _hop("https://example.org:8443").authority == "example.org:8443"
    assert _hop("https://example.org:8443").target == "/"


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
def test_redirect_location_relative_and_absolute(absolute: bool) -> None:
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" + JSON

    def answer(req: bytes) -> bytes:
        if head_lines(req)[0].startswith("GET /old/page "):
            loc = f"http://127.0.0.1:{port[0]}/new/page" if absolute else "../new/page"
            return f"HTTP/1.1 302 Found\r\nLocation: {loc}\r\nContent-Length: 3\r\n\r\nbye".encode()
        return final

    port = [0]
    with peer(answer) as p:
        port[0] = p.port
        rsp = get(f"http://127.0.0.1:{p.port}/old/page", max_redirects=2)
        lines = [head_lines(r)[0] for r in p.requests]
    assert rsp.status == 200 and rsp.body == JSON
    assert rsp.url == f"http://127.0.0.1:{p.port}/new/page"
    assert lines == ["GET /old/page HTTP/1.1", "GET /new/page HTTP/1.1"]


def test_redirect_to_another_origin_drops_the_secrets() -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" + JSON
    with peer(ok) as other:
        there = f"http://127.0.0.1:{other.port}/elsewhere"
        with peer(f"HTTP/1.1 301 Moved\r\nLocation: {there}\r\n\r\n".encode()) as home:
            url = f"http://127.0.0.1:{home.port}/"
            ep = HttpEndpoint(url, headers=(("X-API-Key", "k-1"),), username="u", password="p")
            rsp = get(url, ep, max_redirects=1)
        assert rsp.status == 200
        assert header(home.requests[0], "X-API-Key") == "k-1"
        assert header(home.requests[0], "Authorization") is not None
        assert header(other.requests[0], "X-API-Key") is None
        assert header(other.requests[0], "Authorization") is None


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"", Reason.ABORTED),  # closed without answering
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", Reason.ABORTED),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", Reason.ABORTED),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", Reason.INVALID_RESPONSE),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", Reason.INVALID_RESPONSE),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 200_000 + b"\r\n\r\n", Reason.INVALID_RESPONSE),
    ],
    ids=["no-answer", "short-body", "short-chunk", "not-http", "bad-header", "huge-head"],
)
def test_broken_answers_have_their_reason(answer: bytes, reason: Reason) -> None:
    with peer(answer) as p, pytest.raises(ProbeError) as e:
        get(f"http://127.0.0.1:{p.port}/")
    assert e.value.reason == reason, e.value.message


def test_body_cap_and_discarded_body() -> None:
    body = b"x" * 5000
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + body
    with peer(answer) as p:
        url = f"http://127.0.0.1:{p.port}/"
        with pytest.raises(ProbeError) as e:
            get(url, max_body=4096)
        kept = get(url, keep_body=False)
    assert e.value.reason == Reason.INVALID_RESPONSE
    assert kept.body == b"" and kept.size == 5000


def test_response_headers_are_case_insensitive() -> None:
    h = Headers([(b"content-type", b"text/html"), (b"vary", b"a"), (b"vary", b"b")])
    assert h.get("Content-Type") == "text/html" and "CONTENT-TYPE" in h
    assert h["Vary"] == "a, b" and h.get("missing", "d") == "d" and len(h) == 2
