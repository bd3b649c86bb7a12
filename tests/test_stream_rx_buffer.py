"""Probe reads go through one receive buffer per thread (probes.net.stream._rx_buffer) and copy
out what arrived. What arrives must come out unchanged, and a large read must not leave its
pages resident in that thread's buffer."""

from __future__ import annotations

import ctypes
import socket
import threading
from collections.abc import Iterator

import pytest

from probes.base import Deadline
from probes.net import stream

PAYLOAD = bytes(range(256)) * 192  # 48 KiB: one read once it has all arrived


@pytest.fixture
def sender() -> Iterator[tuple[int, threading.Event]]:
    """A loopback server that sends PAYLOAD to one connection, closes it, then sets the event
    (so that the client's first read finds all of it waiting)."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(10)
    sent = threading.Event()

    def serve() -> None:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.sendall(PAYLOAD)
        sent.set()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1], sent
    finally:
        srv.close()
        t.join(timeout=10)


def read_all(peer: tuple[int, threading.Event]) -> bytes:
    port, sent = peer
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        stream.enable_rx_timestamps(sock)
        assert sent.wait(10)
        s = stream.TimedStream(sock, Deadline(10.0))
        out = bytearray()
        while chunk := s.recv_some("payload"):
            assert isinstance(chunk, bytes)
            out += chunk
        return bytes(out)


def resident_kib(buf: object) -> int:
    """Rss of the mapping that holds `buf`, from /proc/self/smaps."""
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))  # type: ignore[arg-type]
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "Rss:":
                return int(line.split()[1])
    raise AssertionError("mapping not found")


def test_a_large_read_arrives_whole_and_leaves_no_pages_behind(
    sender: tuple[int, threading.Event],
) -> None:
    assert read_all(sender) == PAYLOAD
    assert resident_kib(stream._rx_buffer()) <= 4


def test_without_the_release_the_pages_would_stay(
    sender: tuple[int, threading.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The measurement above can see resident pages: with the release off, they are there."""
    monkeypatch.setattr(stream, "RELEASE_AFTER", 1 << 30)
    assert read_all(sender) == PAYLOAD
    assert resident_kib(stream._rx_buffer()) >= 44
