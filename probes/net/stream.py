"""A connected socket read and written with every wait bounded by a deadline, each received
chunk stamped with the time the kernel says it arrived.

* Where the OS tells (Linux), the end of a phase is the kernel's receive timestamp of the last
  segment (SO_TIMESTAMPNS): the time our thread then waits for a CPU is the agent host's
  scheduling delay, not the peer's latency.
* TCP_QUICKACK is re-armed before every wait (our ACK leaves at once, so a peer that leaves Nagle
  on and writes a message in two pieces is not held up ~40 ms by our delayed ACK).
* The socket is non-blocking; every wait goes through probes.net.waits (a poll on a thread of
  its own, a parked run on the probe loop), bounded by the deadline. Failures go through the
  reasons table.
"""

from __future__ import annotations

import mmap
import socket
import ssl
import struct
import sys
import threading
import time
from collections import deque

from probes.base import Deadline, Reason
from probes.net.reasons import Stage, Where, failure
from probes.net.waits import READ, WRITE, wait_fd

RECV_CHUNK = 65536
# A read larger than this gives its buffer's pages back to the OS afterwards (see _rx_buffer).
RELEASE_AFTER = 16384
_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # no madvise on Windows
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
# Kernel receive timestamps (CLOCK_REALTIME) as ancillary data; Python does not name the option.
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
_TS_ANCILLARY = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 0


def enable_rx_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp received data with its arrival time (Linux)."""
    if _SO_TIMESTAMPNS is None or not _TS_ANCILLARY:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def rx_timestamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The kernel's arrival time (unix seconds) from recvmsg's ancillary data, if there."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
            if len(data) >= 16:
                sec, nsec = struct.unpack_from("qq", data)
            elif len(data) >= 8:
                sec, nsec = struct.unpack_from("ll", data)
            else:
                return None
            return sec + nsec / 1e9
    return None


_local = threading.local()


def _rx_buffer() -> mmap.mmap:
    """This thread's receive buffer: RECV_CHUNK bytes of anonymous memory, kept for its life.

    recv(65536) mallocs 64 KiB per read and shrinks it to what arrived. With hundreds of probe
    threads reading at once, glibc's heap held those blocks, the small chunks left where they
    had been shrunk, and what each thread's malloc cache kept of them: ~15-20 MB at 5,000
    targets that malloc_trim gave back and the next seconds of reads took again (BENCHMARKS.md
    "Night"). Reading into one buffer per thread and copying out
    what arrived allocates only that. An mmap costs memory only for the pages a read wrote;
    after a large read they are given back (MADV_DONTNEED), so a thread that once read a web
    page does not keep 64 KiB.
    """
    buf: mmap.mmap | None = getattr(_local, "rx", None)
    if buf is None:
        buf = _local.rx = mmap.mmap(-1, RECV_CHUNK)
    return buf


class TimedStream:
    """Deadline-bounded, kernel-timestamped reads and writes on one connected socket."""

    # How a missing answer to a read is worded, by the read's `what` (default "WHAT: no answer").
    SILENCE: dict[str, str] = {}

    def __init__(self, sock: socket.socket, deadline: Deadline) -> None:
        sock.setblocking(False)  # waits are ours (an accepted socket comes blocking)
        self.sock = sock
        self.deadline = deadline
        # perf_counter() time at which the last byte of the latest read reached our socket
        self.received_at = 0.0
        self._sent_at = 0.0
        # received but not yet consumed: (bytes, perf_counter time they reached the socket)
        self._rx: deque[tuple[bytes, float]] = deque()
        self._rx_len = 0
        self._quickack = _QUICKACK is not None
        # SSLSocket has no recvmsg; there the end of a phase is when recv() returned
        self._rx_ts = False
        if not isinstance(sock, ssl.SSLSocket) and _SO_TIMESTAMPNS is not None:
            try:
                self._rx_ts = bool(sock.getsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS))
            except OSError:
                self._rx_ts = False

    def _where(self, what: str) -> Where:
        return Where(what, silence=self.SILENCE.get(what, ""), budget=self.deadline.budget)

    def _ack_now(self) -> None:
        """Send any ACK the kernel is holding back, and ACK the next segment at once.

        Linux falls back to delayed ACKs on an interactive connection; a peer that leaves Nagle on
        and writes a PDU header and its body separately then waits for our ACK (~40 ms on
        Linux) before sending the body. Re-arming TCP_QUICKACK before each wait avoids that.
        """
        if self._quickack:
            try:
                self.sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
            except OSError:
                self._quickack = False

    def _fill(self, n: int, what: str) -> None:
        """Receive until at least n bytes are buffered, noting when each chunk arrived.

        Each recv() takes all that has arrived (up to 64 KiB): one read per wake-up, so a PDU is
        rarely left half-read while the next segment lands (the kernel would then merge the two
        and report only the later arrival time).
        """
        while self._rx_len < n:
            chunk, at = self._recv_once(what)
            if not chunk:
                raise failure(EOFError(), Stage.RECEIVE, self._where(what))
            self._rx.append((chunk, at))
            self._rx_len += len(chunk)

    def _recv_once(self, what: str) -> tuple[bytes, float]:
        """One read of all that has arrived (b"" when the peer closed), with its arrival time."""
        self.deadline.left_or_raise(Reason.TIMEOUT, what)  # late data is no answer
        arrived: float | None = None
        buf = _rx_buffer()
        self._ack_now()
        try:
            while True:
                try:
                    if self._rx_ts:
                        n, ancillary, _, _ = self.sock.recvmsg_into([buf], _TS_ANCILLARY)
                        arrived = rx_timestamp(ancillary)
                    else:
                        n = self.sock.recv_into(buf)
                    break
                except ssl.SSLWantWriteError:  # a TLS renegotiation or key update
                    self.wait(WRITE, what)
                except (BlockingIOError, ssl.SSLWantReadError):
                    self.wait(READ, what)
                    self._ack_now()
        except OSError as e:
            raise failure(e, Stage.RECEIVE, self._where(what)) from None
        now = time.perf_counter()
        chunk = buf[:n]
        if n > RELEASE_AFTER and _MADV_DONTNEED is not None:
            buf.madvise(_MADV_DONTNEED)
        if arrived is None:
            return chunk, now
        # how long the data sat in the socket before this thread got to it; never before our
        # last request left (guards against a step of the wall clock)
        lag = min(max(time.time() - arrived, 0.0), max(now - self._sent_at, 0.0))
        return chunk, now - lag

    def wait(self, events: int, what: str) -> None:
        """Until the socket is ready for `events`; TimeoutError (a socket timeout's reason) once
        the deadline passes first."""
        if not wait_fd(self.sock, events, self.deadline.left_or_raise(Reason.TIMEOUT, what)):
            raise TimeoutError("timed out")

    def recv_some(self, what: str) -> bytes:
        """The next data to arrive, b"" once the peer has closed; `received_at` becomes its
        arrival time. For a caller whose protocol engine does its own buffering (HTTP: h11)."""
        chunk, self.received_at = self._recv_once(what)
        return chunk

    def _recv_exact(self, n: int, what: str) -> bytes:
        """n bytes; `received_at` becomes the arrival time of the last of them."""
        self._fill(n, what)
        out = bytearray()
        need = n
        while need:
            chunk, at = self._rx[0]
            if len(chunk) <= need:
                out += chunk
                need -= len(chunk)
                self._rx.popleft()
            else:
                out += chunk[:need]
                self._rx[0] = (chunk[need:], at)
                need = 0
            self.received_at = at
        self._rx_len -= n
        return bytes(out)

    def _send(self, data: bytes, what: str) -> float:
        """Send all of `data`; returns perf_counter() taken just before the first byte left.

        The deadline is checked before that clock reading, so the phase starts as close to the
        send() system call as Python allows.
        """
        view = memoryview(data)
        try:
            self.deadline.left_or_raise(Reason.TIMEOUT, what)
            started = time.perf_counter()
            while view:
                try:
                    view = view[self.sock.send(view):]
                except (BlockingIOError, ssl.SSLWantWriteError):
                    self.wait(WRITE, what)
                except ssl.SSLWantReadError:
                    self.wait(READ, what)
            self._sent_at = time.perf_counter()
        except OSError as e:
            raise failure(e, Stage.SEND, self._where(what)) from None
        return started

    def send_pdus(self, pdus: list[bytes], what: str) -> float:
        """Send encoded messages in order; returns perf_counter() just before the first byte."""
        started = self._send(pdus[0], what)
        for pdu in pdus[1:]:
            self._send(pdu, what)
        return started
