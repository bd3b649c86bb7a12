"""/metrics and /health compressed when the client asks for gzip, and only then.

Read with the standard library's gzip and raw sockets, not with the agent's compressor or a
client that decodes for us: what Prometheus receives must be a plain RFC 1952 stream.
"""

from __future__ import annotations

import gzip
import json
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

import agent.http_body
from agent.http_body import accepts_gzip
from agent.http_server import Endpoints, make_server, serve_in_thread


def metrics_text() -> bytes:
    # Shaped like a scrape (labels repeat, values vary), large enough to span many deflate blocks.
    rng = random.Random(7)
    return b"".join(
        f'pacs_probe_phase_seconds{{target="PACS{t:04d}",probe="dicom_echo",phase="connect",'
        f'quantile="0.99"}} {rng.random() / 100:.6g}\n'.encode()
        for t in range(20_000)
    )


METRICS = metrics_text()
# as the agent's exporter hands them over: one cached fragment per line, many batches' worth
PARTS = METRICS.splitlines(keepends=True)
HEALTH = {"status": "HEALTHY", "targets": [{"name": f"t{i}"} for i in range(200)]}


@contextmanager
def server(parts: bool = False) -> Iterator[int]:
    ep = Endpoints(
        metrics=(lambda: PARTS) if parts else (lambda: METRICS),
        health=lambda: (200, json.dumps(HEALTH).encode()),
        ready=lambda: True,
        reload=lambda: (True, "ok"),
    )
    srv = make_server("127.0.0.1:0", ep)
    thread = serve_in_thread(srv)
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def get(port: int, path: str, accept_encoding: str | None) -> tuple[dict[str, str], bytes]:
    """One GET on its own connection; the response's headers (lower-cased names) and raw body."""
    extra = f"Accept-Encoding: {accept_encoding}\r\n" if accept_encoding is not None else ""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\n{extra}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    assert int(headers["content-length"]) == len(body)
    return headers, body


def test_metrics_gzip_decodes_to_the_identity_body() -> None:
    with server() as port:
        headers, body = get(port, "/metrics", "gzip")
        plain_headers, plain = get(port, "/metrics", None)
    assert headers.get("content-encoding") == "gzip"
    assert body[:2] == b"\x1f\x8b"  # a gzip member, not raw deflate or zlib
    assert gzip.decompress(body) == METRICS == plain
    assert "content-encoding" not in plain_headers
    assert len(body) < len(METRICS) / 4  # compressed, not stored


def test_health_gzip_decodes_to_the_same_json() -> None:
    with server() as port:
        headers, body = get(port, "/health", "deflate, gzip;q=0.5")
    assert headers.get("content-encoding") == "gzip"
    assert json.loads(gzip.decompress(body)) == HEALTH


def test_small_bodies_and_other_encodings_are_sent_as_they_are() -> None:
    with server() as port:
        small_headers, small = get(port, "/-/healthy", "gzip")
        br_headers, br = get(port, "/metrics", "br")
    assert "content-encoding" not in small_headers and small == b"OK\n"
    assert "content-encoding" not in br_headers and br == METRICS


@pytest.mark.parametrize("batch", [1000, None], ids=["many-batches", "one-call"])
def test_metrics_from_parts_is_the_concatenation_gzipped_or_not(
    monkeypatch: pytest.MonkeyPatch, batch: int | None
) -> None:
    if batch is not None:
        monkeypatch.setattr(agent.http_body, "BATCH_PARTS", batch)
        assert len(PARTS) > 10 * batch  # compressed over many batches
    else:
        assert len(PARTS) <= agent.http_body.BATCH_PARTS  # in one call
    with server(parts=True) as port:
        headers, body = get(port, "/metrics", "gzip")
        plain_headers, plain = get(port, "/metrics", None)
    assert headers.get("content-encoding") == "gzip"
    assert gzip.decompress(body) == METRICS == plain
    assert "content-encoding" not in plain_headers
    assert len(body) < len(METRICS) / 4


def test_gzip_refused_with_q_zero_is_not_sent() -> None:
    with server(parts=True) as port:
        headers, body = get(port, "/metrics", "gzip;q=0, identity")
    assert "content-encoding" not in headers and body == METRICS


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("deflate, gzip;q=0.5", True),
        ("gzip ; q=1.0", True),
        ("*", True),
        ("br, *;q=0.1", True),
        (None, False),
        ("", False),
        ("identity", False),
        ("br", False),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),  # gzip named and refused: the wildcard does not bring it back
        ("gzip;q=abc", False),
    ],
)
def test_accept_encoding_admits_gzip(header: str | None, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


def test_a_body_of_many_small_parts_is_gzipped_by_its_total_size() -> None:
    from agent.http_body import MIN_GZIP, longer_than

    assert longer_than([b"x"] * (MIN_GZIP + 1), MIN_GZIP)
    assert not longer_than([b"x"] * MIN_GZIP, MIN_GZIP)
    assert longer_than(b"x" * (MIN_GZIP + 1), MIN_GZIP) and not longer_than(b"", MIN_GZIP)
