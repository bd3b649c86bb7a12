"""Hostile and faulty peers on 127.0.0.1 for the reliability tests.

Everything here is a real server on a real socket: a `ScriptServer` accepts connections and runs
a script per connection in its own thread. Scripts cover the faults a monitor meets in the field:

* DICOM: never read, read and never answer, A-ASSOCIATE-AC then stall, A-ABORT mid-exchange,
  close halfway through a PDU, A-ASSOCIATE-RJ, and "send these bytes" for the fuzzer;
* HTTP: slow-loris (drips the status line and headers), 500, an endless chunked body.

PDUs are built by hand from PS3.8 so a test can bend any field (wrong lengths, garbage items).
Every wait is bounded by the server's stop event or a timeout.

`python -m tests.helpers.hostile_peers MODE...` serves the named modes in a separate
process and prints `{"mode": port, ...}` as one JSON line; it exits when its standard input
closes. The leak test uses that, so the peers' own threads and sockets are not counted as the
agent's.
"""

from __future__ import annotations

import json
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode as encode_dataset

LOOPBACK = "127.0.0.1"
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLICIT_VR_LE = b"1.2.840.10008.1.2"

Script = Callable[[socket.socket, "ScriptServer"], None]


# -- the server ----------------------------------------------------------------------------------


class ScriptServer:
    """Accepts TCP (optionally TLS) connections on loopback; runs `script(conn, server)` for each.

    `accepted` counts connections, `peer_closed` counts those the client closed while a script
    was waiting on it (what a cancelled probe looks like from the PACS side).
    """

    def __init__(
        self, script: Script, *, ssl_context: ssl.SSLContext | None = None, backlog: int = 256
    ) -> None:
        self.script = script
        self.ssl_context = ssl_context
        self.backlog = backlog
        self.stopping = threading.Event()
        self.accepted = 0
        self.peer_closed = 0
        self.handshake_failures = 0
        self.errors: list[str] = []
        self.state: dict[str, Any] = {}  # for scripts that are steered by the test (the fuzzer)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._sock: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.port = 0

    def start(self) -> ScriptServer:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((LOOPBACK, 0))
        s.listen(self.backlog)
        s.settimeout(0.05)
        self._sock = s
        self.port = int(s.getsockname()[1])
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="hostile-accept", daemon=True
        )
        self._acceptor.start()
        return self

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self.stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.accepted += 1
                self._conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), name="hostile-conn", daemon=True)
            with self._lock:
                self._threads.add(t)
            t.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.ssl_context is not None:
                conn.settimeout(5)
                try:
                    tls = self.ssl_context.wrap_socket(conn, server_side=True)
                except (ssl.SSLError, OSError):
                    with self._lock:
                        self.handshake_failures += 1
                    return
                with self._lock:
                    self._conns.discard(conn)  # its descriptor now belongs to `tls`
                    self._conns.add(tls)
                conn = tls
            self.script(conn, self)
        except OSError:
            pass  # the client went away: that is what most of these peers provoke
        except Exception as e:  # noqa: BLE001 - a broken script must show up in the test
            self.errors.append(repr(e))
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self._lock:
                self._conns.discard(conn)
                self._threads.discard(threading.current_thread())

    def active(self) -> int:
        with self._lock:
            return len(self._threads)

    def stop(self) -> None:
        self.stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(2)
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(2)

    def __enter__(self) -> ScriptServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- socket helpers for scripts --------------------------------------------------------------------


def recv_exact(
    conn: socket.socket, n: int, server: ScriptServer, limit: float = 10.0
) -> bytes | None:
    """n bytes, or None if the client closed / the server is stopping / `limit` passed."""
    buf = bytearray()
    end = time.monotonic() + limit
    conn.settimeout(0.1)
    while len(buf) < n:
        if server.stopping.is_set() or time.monotonic() > end:
            return None
        try:
            chunk = conn.recv(n - len(buf))
        except TimeoutError:
            continue
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def read_pdu(conn: socket.socket, server: ScriptServer) -> tuple[int, bytes] | None:
    head = recv_exact(conn, 6, server)
    if head is None:
        return None
    pdu_type, _, length = struct.unpack(">BBL", head)
    if length > 1 << 20:
        return None
    body = recv_exact(conn, length, server)
    return None if body is None else (pdu_type, head + body)


def read_http_request(conn: socket.socket, server: ScriptServer) -> bytes | None:
    buf = bytearray()
    end = time.monotonic() + 10
    conn.settimeout(0.1)
    while b"\r\n\r\n" not in buf:
        if server.stopping.is_set() or time.monotonic() > end or len(buf) > 65536:
            return None
        try:
            chunk = conn.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def hold(conn: socket.socket, server: ScriptServer, limit: float = 60.0) -> None:
    """Read and discard until the client closes (counted) or the server stops."""
    end = time.monotonic() + limit
    conn.settimeout(0.1)
    while not server.stopping.is_set() and time.monotonic() < end:
        try:
            chunk = conn.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            with server._lock:  # noqa: SLF001 - the server's own counter
                server.peer_closed += 1
            return


def finish(conn: socket.socket, server: ScriptServer) -> None:
    """Half-close after the last byte, then drain until the client closes.

    Closing with unread input makes the kernel send RST, and the client may then lose the bytes
    we sent; half-closing first delivers them, followed by a clean end of stream.
    """
    try:
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        return
    hold(conn, server, limit=5.0)


def send_slowly(
    conn: socket.socket, data: bytes, server: ScriptServer, every: float, step: int = 1
) -> bool:
    """Drip `data`, `step` bytes every `every` seconds; False if the client left or we stop."""
    for i in range(0, len(data), step):
        try:
            conn.sendall(data[i : i + step])
        except OSError:
            return False
        if server.stopping.wait(every):
            return False
    return True


# -- DICOM PDUs, built by hand (PS3.8 §9.3) ------------------------------------------------------


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def pdu(pdu_type: int, body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return struct.pack(">BBL", pdu_type, 0, length) + body


def _pad_ae(name: bytes) -> bytes:
    return name[:16].ljust(16, b" ")


def rq_context_ids(rq: bytes) -> list[int]:
    """Presentation context ids proposed in an A-ASSOCIATE-RQ."""
    ids, off = [], 74
    while off + 4 <= len(rq):
        item_type, _, length = struct.unpack(">BBH", rq[off : off + 4])
        if item_type == 0x20 and length >= 1:
            ids.append(rq[off + 4])
        off += 4 + length
    return ids or [1]


def ac_items(
    context_ids: list[int],
    *,
    max_pdu: int | None = 16384,
    result: int = 0,
    transfer_syntax: bytes = IMPLICIT_VR_LE,
) -> bytes:
    items = _item(0x10, APPLICATION_CONTEXT)
    for cid in context_ids:
        items += _item(0x21, bytes([cid, 0, result, 0]) + _item(0x40, transfer_syntax))
    user = _item(0x52, b"1.2.826.0.1.3680043.9.9999.1")
    if max_pdu is not None:
        user = _item(0x51, struct.pack(">L", max_pdu)) + user
    return items + _item(0x50, user)


def associate_ac(rq: bytes, *, items: bytes | None = None, **kw: Any) -> bytes:
    """An A-ASSOCIATE-AC for `rq` accepting every context (or with the given variable items)."""
    called, calling = rq[10:26], rq[26:42]
    fixed = struct.pack(">HH", 1, 0) + _pad_ae(called) + _pad_ae(calling) + bytes(32)
    return pdu(0x02, fixed + (ac_items(rq_context_ids(rq), **kw) if items is None else items))


ASSOCIATE_RJ = pdu(0x03, bytes([0, 1, 1, 3]))  # rejected-permanent, service user, called AE
A_ABORT = pdu(0x07, bytes([0, 0, 2, 0]))  # service provider, reason 0
RELEASE_RP = pdu(0x06, bytes(4))


def p_data(context_id: int, data: bytes, *, command: bool = True, last: bool = True) -> bytes:
    control = (1 if command else 0) | (2 if last else 0)
    pdv = struct.pack(">LBB", len(data) + 2, context_id, control) + data
    return pdu(0x04, pdv)


def echo_rsp_command(status: int = 0, message_id: int = 1) -> bytes:
    ds = Dataset()
    ds.CommandGroupLength = 0
    ds.AffectedSOPClassUID = "1.2.840.10008.1.1"
    ds.CommandField = 0x8030
    ds.MessageIDBeingRespondedTo = message_id
    ds.CommandDataSetType = 0x0101
    ds.Status = status
    raw = encode_dataset(ds, True, True)
    assert raw is not None
    ds.CommandGroupLength = len(raw) - 12
    raw = encode_dataset(ds, True, True)
    assert raw is not None
    return bytes(raw)


def pdata_context_id(pdata: bytes) -> int:
    return pdata[10] if len(pdata) > 10 else 1


# -- DICOM scripts -------------------------------------------------------------------------------


def never_read(conn: socket.socket, server: ScriptServer) -> None:
    """Accept and never read: the RQ sits in our receive buffer."""
    server.stopping.wait(60)


def read_never_answer(conn: socket.socket, server: ScriptServer) -> None:
    hold(conn, server)


def reject(conn: socket.socket, server: ScriptServer) -> None:
    if read_pdu(conn, server) is None:
        return
    conn.sendall(ASSOCIATE_RJ)
    finish(conn, server)


def _associate(conn: socket.socket, server: ScriptServer) -> tuple[bytes, bytes] | None:
    """Read the RQ, accept it, read the first DIMSE request: (rq, request P-DATA)."""
    got = read_pdu(conn, server)
    if got is None or got[0] != 0x01:
        return None
    conn.sendall(associate_ac(got[1]))
    req = read_pdu(conn, server)
    if req is None or req[0] != 0x04:
        return None
    return got[1], req[1]


def stall_after_ac(conn: socket.socket, server: ScriptServer) -> None:
    """Associate, read the DIMSE request, never answer it.

    What the client sends afterwards (its A-ABORT when it gives up) is recorded, by PDU type, in
    `server.state["after_stall"]`; its closing the connection is counted in `peer_closed`.
    """
    if _associate(conn, server) is None:
        return
    while True:
        got = read_pdu(conn, server)
        if got is None:
            break
        with server._lock:  # noqa: SLF001
            server.state.setdefault("after_stall", []).append(got[0])
    if not server.stopping.is_set():
        with server._lock:  # noqa: SLF001
            server.peer_closed += 1


def abort_mid_exchange(conn: socket.socket, server: ScriptServer) -> None:
    """Associate, read the DIMSE request, answer with A-ABORT."""
    if _associate(conn, server) is not None:
        conn.sendall(A_ABORT)
        finish(conn, server)


def close_mid_ac(conn: socket.socket, server: ScriptServer) -> None:
    """Send the first half of the A-ASSOCIATE-AC, then close."""
    got = read_pdu(conn, server)
    if got is not None:
        ac = associate_ac(got[1])
        conn.sendall(ac[: len(ac) // 2])
        finish(conn, server)


def close_mid_dimse(conn: socket.socket, server: ScriptServer) -> None:
    """Associate, then send half of the C-ECHO-RSP P-DATA-TF PDU, then close."""
    got = _associate(conn, server)
    if got is not None:
        rsp = p_data(pdata_context_id(got[1]), echo_rsp_command())
        conn.sendall(rsp[: len(rsp) // 2])
        finish(conn, server)


def echo_ok(conn: socket.socket, server: ScriptServer) -> None:
    """A well-behaved Verification SCP (one C-ECHO, then release)."""
    got = _associate(conn, server)
    if got is None:
        return
    conn.sendall(p_data(pdata_context_id(got[1]), echo_rsp_command()))
    rel = read_pdu(conn, server)
    if rel is not None and rel[0] == 0x05:
        conn.sendall(RELEASE_RP)
    finish(conn, server)


def _command_rsp(command: bytes) -> bytes | None:
    """The success response to a C-ECHO-RQ or C-FIND-RQ command set (implicit VR LE), or None."""
    from io import BytesIO

    from pynetdicom.dsutils import decode as decode_dataset

    try:
        rq = decode_dataset(BytesIO(command), True, True)
        field, sop, mid = int(rq.CommandField), str(rq.AffectedSOPClassUID), int(rq.MessageID)
    except Exception:  # noqa: BLE001 - not a command we can answer
        return None
    if field not in (0x0030, 0x0020):
        return None
    ds = Dataset()
    ds.CommandGroupLength = 0
    ds.AffectedSOPClassUID = sop
    ds.CommandField = field | 0x8000
    ds.MessageIDBeingRespondedTo = mid
    ds.CommandDataSetType = 0x0101
    ds.Status = 0
    raw = encode_dataset(ds, True, True)
    assert raw is not None
    ds.CommandGroupLength = len(raw) - 12
    raw = encode_dataset(ds, True, True)
    assert raw is not None
    return bytes(raw)


def _pdvs(pdata: bytes) -> list[tuple[int, int, bytes]]:
    """(context id, control header, fragment) of each PDV item of a P-DATA-TF PDU."""
    out, off = [], 6
    while off + 6 <= len(pdata):
        (n,) = struct.unpack(">L", pdata[off : off + 4])
        out.append((pdata[off + 4], pdata[off + 5], pdata[off + 6 : off + 4 + n]))
        off += 4 + n
    return out


# (0000,0800) CommandDataSetType = 0x0101 in implicit VR little endian: no data set follows
NO_DATA_SET = b"\x00\x00\x00\x08\x02\x00\x00\x00\x01\x01"


def truncated(payload: bytes) -> bool:
    """True when the first PDU of `payload` is cut short (header or body incomplete)."""
    if len(payload) < 6:
        return True
    return struct.unpack(">L", payload[2:6])[0] > len(payload) - 6


def scripted_reply(conn: socket.socket, server: ScriptServer) -> None:
    """For the fuzzer: server.state = {"after_ac": bool, "payload": bytes}.

    Reads the RQ; if `after_ac`, accepts it and reads the DIMSE request; then sends `payload`.
    A payload whose first PDU is cut short is followed by a clean end of stream (otherwise the
    probe could only wait for the rest until its deadline). After a complete PDU the peer goes on
    as a PACS would: an A-RELEASE-RQ is answered with A-RELEASE-RP, an A-ABORT ends it, and a
    C-ECHO or C-FIND request (sent when the payload was an acceptable A-ASSOCIATE-AC) is
    reassembled from its fragments and answered with success. What it answered is recorded in
    `server.state["answered"]`.
    """
    plan = dict(server.state)
    if plan.get("after_ac"):
        if _associate(conn, server) is None:
            return
    elif read_pdu(conn, server) is None:
        return
    payload = plan.get("payload", b"")
    conn.sendall(payload)
    if truncated(payload):
        finish(conn, server)
        return
    command, cid = b"", 1
    while (got := read_pdu(conn, server)) is not None:
        if got[0] == 0x05:
            conn.sendall(RELEASE_RP)
            with server._lock:  # noqa: SLF001
                server.state.setdefault("answered", []).append("release")
            finish(conn, server)
            return
        if got[0] == 0x07:
            return
        if got[0] != 0x04:
            continue
        for cid, control, frag in _pdvs(got[1]):
            if control & 1:
                command += frag
            # a command without a data set ends with its last command fragment; a C-FIND's
            # identifier with the last data-set fragment
            if control & 2 and (not control & 1 or NO_DATA_SET in command):
                rsp = _command_rsp(command)
                command = b""
                if rsp is not None:
                    conn.sendall(p_data(cid, rsp))
                    with server._lock:  # noqa: SLF001
                        server.state.setdefault("answered", []).append("dimse")


# -- HTTP scripts ----------------------------------------------------------------------------------

SLOW_LORIS_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
    b'X-Padding: slow-loris-slow-loris-slow-loris\r\n\r\n{"status":"UP"}'
)


def slow_loris(conn: socket.socket, server: ScriptServer) -> None:
    """Drip the status line and headers one byte every 200 ms."""
    if read_http_request(conn, server) is None:
        return
    if send_slowly(conn, SLOW_LORIS_RESPONSE, server, every=0.2):
        finish(conn, server)
    else:
        with server._lock:  # noqa: SLF001
            server.peer_closed += 1


def http_ok(conn: socket.socket, server: ScriptServer) -> None:
    if read_http_request(conn, server) is None:
        return
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n"
        b'Connection: close\r\n\r\n{"status":"UP"}'
    )
    finish(conn, server)


def http_500(conn: socket.socket, server: ScriptServer) -> None:
    if read_http_request(conn, server) is None:
        return
    conn.sendall(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 21\r\nConnection: close\r\n\r\nInternal Server Error"
    )
    finish(conn, server)


def endless_chunked(conn: socket.socket, server: ScriptServer, every: float = 0.0) -> None:
    """A 200 with a chunked body that never ends (64 KiB chunks, optionally every `every` s)."""
    if read_http_request(conn, server) is None:
        return
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
    conn.settimeout(1.0)
    while not server.stopping.is_set():
        try:
            conn.sendall(chunk)
        except OSError:  # the client gave up on us: the point of the exercise
            with server._lock:  # noqa: SLF001
                server.peer_closed += 1
            return
        if every and server.stopping.wait(every):
            return


def endless_chunked_slow(conn: socket.socket, server: ScriptServer) -> None:
    """Endless, but slow: one small chunk every 50 ms, so the deadline (not the cap) ends it."""
    if read_http_request(conn, server) is None:
        return
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    while not server.stopping.is_set():
        try:
            conn.sendall(b"10\r\n" + b"y" * 16 + b"\r\n")
        except OSError:
            with server._lock:  # noqa: SLF001
                server.peer_closed += 1
            return
        if server.stopping.wait(0.05):
            return


MODES: dict[str, Script] = {
    "never_read": never_read,
    "read_never_answer": read_never_answer,
    "reject": reject,
    "stall_after_ac": stall_after_ac,
    "abort": abort_mid_exchange,
    "close_mid_ac": close_mid_ac,
    "close_mid_dimse": close_mid_dimse,
    "echo_ok": echo_ok,
    "slow_loris": slow_loris,
    "http_ok": http_ok,
    "http_500": http_500,
    "endless_chunked": endless_chunked,
    "endless_chunked_slow": endless_chunked_slow,
}


def main(argv: list[str]) -> int:
    servers = {mode: ScriptServer(MODES[mode]).start() for mode in argv}
    print(json.dumps({m: s.port for m, s in servers.items()}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    for s in servers.values():
        s.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
