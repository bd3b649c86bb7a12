"""Reads one HTTP/1.1 response to a GET from a byte source: status, header fields, body.

Only what a prober needs, and strict where a misreading could hide a fault: the status line and
every header line must be well formed (RFC 9112), the head is size-capped, and the body is framed
as RFC 9112 section 6.3 says for a response to GET: none for 1xx/204/304, chunked when
Transfer-Encoding ends in chunked (it wins over Content-Length), otherwise until the peer closes
when Transfer-Encoding is there or Content-Length is not; Content-Length values that disagree or
are not digits are refused. 1xx interim answers are skipped.

Why not h11 (the engine under httpx): measured on the per-run benchmark, its event machinery
(Request validation, state machine, events) cost ~0.15 ms of CPU per run, about as much as the
whole TCP exchange; this reader costs a few µs. The test suite checks this reader against h11 on
generated responses (tests/test_http1.py), h11 being the reference.

Errors: ProtocolError for bytes that are not such a response, EOFError when the peer closed
before the message ended (probes.net.failure judges both, as it judges the DICOM path's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from probes.net.reasons import ProtocolError

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_STATUS = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?")
MAX_LINE = 4096  # a chunk-size line


class ResponseReader:
    """One response from `recv` (each call: the next bytes, b"" once the peer has closed)."""

    def __init__(self, recv: Callable[[], bytes], max_head: int) -> None:
        self._recv = recv
        self._max_head = max_head
        # unread bytes; a bytearray drops its front in place (del buf[:n]) without a copy
        self._buf = bytearray()
        self._closed = False
        self.status = 0
        self.fields: list[tuple[bytes, bytes]] = []  # names lowercased, in order
        self._framing: tuple[str, int] = ("none", 0)

    def _more(self) -> bool:
        """Read once more into the buffer; False when the peer has closed."""
        if self._closed:
            return False
        data = self._recv()
        if not data:
            self._closed = True
            return False
        self._buf += data
        return True

    def head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The final response's status and header fields (interim 1xx answers skipped)."""
        while True:
            m = _HEAD_END.search(self._buf)
            while m is None:
                if len(self._buf) > self._max_head:
                    raise ProtocolError(f"response head larger than {self._max_head} bytes")
                seen = len(self._buf)
                if not self._more():
                    raise EOFError("closed before the response head ended")
                # only where the new bytes could end the head: a dripped head costs O(n), not n²
                m = _HEAD_END.search(self._buf, max(seen - 3, 0))
            if m.start() > self._max_head:
                raise ProtocolError(f"response head larger than {self._max_head} bytes")
            lines = bytes(self._buf[: m.start()]).split(b"\n")
            del self._buf[: m.end()]
            status = _status(lines[0].rstrip(b"\r"))
            fields = [_field(line.rstrip(b"\r")) for line in lines[1:]]
            if 100 <= status < 200:
                if status == 101:  # nothing asked for a protocol switch
                    raise ProtocolError("unasked protocol switch")
                continue
            self.status, self.fields = status, fields
            self._framing = _framing(status, fields)
            return status, fields

    def body(self) -> Iterator[bytes]:
        """The body's bytes as they arrive, framing removed; ends at the message's end."""
        kind, length = self._framing
        if kind == "length":
            yield from self._counted(length)
        elif kind == "chunked":
            yield from self._chunked()
        elif kind == "close":
            if self._buf:
                yield self._take(len(self._buf))
            while self._more():
                yield self._take(len(self._buf))

    def _take(self, n: int) -> bytes:
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def _counted(self, left: int) -> Iterator[bytes]:
        while left:
            if not self._buf and not self._more():
                raise EOFError("closed before the response body ended")
            chunk = self._take(min(left, len(self._buf)))
            left -= len(chunk)
            yield chunk

    def _line(self) -> bytes:
        while (end := self._buf.find(b"\n", 0, MAX_LINE)) < 0:
            if len(self._buf) > MAX_LINE:
                raise ProtocolError("chunk line too long")
            if not self._more():
                raise EOFError("closed before the chunked body ended")
        line = bytes(self._buf[:end]).rstrip(b"\r")
        del self._buf[: end + 1]
        return line

    def _chunked(self) -> Iterator[bytes]:
        while True:
            m = _CHUNK_SIZE.fullmatch(self._line())
            if m is None:
                raise ProtocolError("bad chunk size")
            size = int(m.group(1), 16)
            if size == 0:
                trailer = 0
                while line := self._line():  # trailer fields, up to the empty line
                    trailer += len(line)
                    if trailer > self._max_head:
                        raise ProtocolError("chunked trailer too large")
                return
            yield from self._counted(size)
            if self._line():
                raise ProtocolError("chunk not followed by CRLF")


def _status(line: bytes) -> int:
    m = _STATUS.fullmatch(line)
    if m is None:
        raise ProtocolError("not an HTTP/1.x status line")
    return int(m.group(1))


def _field(line: bytes) -> tuple[bytes, bytes]:
    m = _FIELD.fullmatch(line)
    if m is None or _BAD_VALUE.search(m.group(2)):
        raise ProtocolError("malformed header line")
    return m.group(1).lower(), m.group(2)


def _framing(status: int, fields: list[tuple[bytes, bytes]]) -> tuple[str, int]:
    """How the body of this response to a GET ends (RFC 9112 section 6.3)."""
    if status in (204, 304):
        return "none", 0
    codings = [v for k, v in fields if k == b"transfer-encoding"]
    if codings:
        last = b",".join(codings).rsplit(b",", 1)[-1].strip().lower()
        return ("chunked", 0) if last == b"chunked" else ("close", 0)
    lengths = {v.strip() for k, v in fields if k == b"content-length"}
    if not lengths:
        return "close", 0
    values = {p.strip() for v in lengths for p in v.split(b",")}  # "5, 5" is one length
    if len(values) != 1:
        raise ProtocolError("conflicting Content-Length")
    (value,) = values
    if not value.isdigit() or len(value) > 18:
        raise ProtocolError("bad Content-Length")
    length = int(value)
    return ("length", length) if length else ("none", 0)
