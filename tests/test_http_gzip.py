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
HEALTH = {"status": "HEALTHY", "targets": [{"name": f"t{i}"} for i in range(200)]}


@contextmanager
def server() -> Iterator[int]:
    ep = Endpoints(
        metrics=lambda: METRICS,
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
