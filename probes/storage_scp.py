"""The agent's own storage SCP for one C-MOVE run: it takes the PACS's C-STOREs and counts them.

A C-MOVE sends the images over a second association that the PACS opens to the move
destination (the agent). For the length of one run this module listens on `storeListen`,
accepts those associations on our own sockets (pynetdicom only encodes and decodes PDUs, as in
probes/dicom_wire.py), answers every C-STORE-RQ with success and keeps only counts and arrival
times: the data sets are counted as they pass and dropped, never written, never decoded.

Arrival times are taken at the socket like every other phase (kernel receive timestamps where
the OS gives them) on the same perf_counter clock as the C-MOVE request, so first_image and
last_image mean the same thing for C-GET and C-MOVE.

Runs that share a listen address take turns (a lock per address, waited for within the
deadline): only one run can own a port at a time.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
)
from pynetdicom.presentation import PresentationContext

from probes.base import Deadline, Phases, ProbeError, Reason
from probes.dicom_pdu import (
    AFFECTED_SOP_CLASS,
    AFFECTED_SOP_INSTANCE,
    APPLICATION_CONTEXT,
    C_ECHO_RQ_FIELD,
    C_ECHO_RSP_FIELD,
    C_STORE_RQ_FIELD,
    COMMAND_FIELD,
    MESSAGE_ID,
    PDU_ASSOC_RQ,
    VERIFICATION,
    c_store_rsp_pdu,
    user_information,
)
from probes.dicom_wire import DicomAssociation
from probes.net import enable_rx_timestamps

# At most this many storage associations at once per run (a PACS may open a few in parallel).
MAX_ASSOCIATIONS = 4
RELEASE_RP = struct.pack(">BBLL", 0x06, 0, 4, 0)
_locks: dict[tuple[str, int], threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass
class Received:
    """What the storage SCP saw during one run (counts only: no identifier is kept)."""

    instances: int = 0
    bytes: int = 0
    first_at: float | None = None  # perf_counter() when the first instance's last byte arrived
    last_at: float | None = None
    associations: int = 0
    error: ProbeError | None = None  # the first storage association that broke, if one did
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, data_bytes: int, at: float) -> None:
        with self.lock:
            self.instances += 1
            self.bytes += data_bytes
            if self.first_at is None:
                self.first_at = at
            self.last_at = at


def _address_lock(host: str, port: int) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((host, port), threading.Lock())


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(MAX_ASSOCIATIONS)
    except OSError as e:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ProbeError(
            Reason.ERROR, f"storage SCP cannot listen on {where}: {e.strerror or type(e).__name__}"
        ) from None
    return sock


@lru_cache(maxsize=16)
def accept_response(rq_pdu: bytes, max_pdu: int) -> bytes:
    """The A-ASSOCIATE-AC for a peer's A-ASSOCIATE-RQ: every context accepted with the first
    transfer syntax it proposes (we never decode a data set, so any encoding will do).

    Cached on the request's bytes: a PACS proposes the same hundred-odd storage contexts on
    every run, and decoding them and encoding the answer with pynetdicom was most of a C-MOVE
    probe's CPU (bench/imaging, BENCHMARKS.md)."""
    rq = A_ASSOCIATE_RQ()
    try:
        rq.decode(rq_pdu)
        req = rq.to_primitive()
    except Exception:  # noqa: BLE001 - any decoder failure on hostile input
        raise ProbeError(Reason.INVALID_RESPONSE, "storage SCP: malformed A-ASSOCIATE-RQ") from None
    results = []
    for cx in req.presentation_context_definition_list or []:
        out = PresentationContext()
        out.context_id = cx.context_id
        out.abstract_syntax = cx.abstract_syntax
        if cx.transfer_syntax:
            out.transfer_syntax = [cx.transfer_syntax[0]]
            out.result = 0x00
        else:
            out.transfer_syntax = []
            out.result = 0x04  # transfer syntaxes not supported
        results.append(out)
    prim = A_ASSOCIATE()
    prim.application_context_name = APPLICATION_CONTEXT
    prim.calling_ae_title = req.calling_ae_title
    prim.called_ae_title = req.called_ae_title
    prim.result = 0x00
    prim.result_source = 0x01
    prim.presentation_context_definition_results_list = results
    prim.user_information = user_information(max_pdu)
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(prim)
    return bytes(ac.encode())


def serve_association(
    conn: socket.socket, deadline: Deadline, received: Received, max_pdu: int
) -> None:
    """Accept one storage association and answer its C-STOREs until the peer releases it."""
    assoc = DicomAssociation(conn, deadline, Phases(), max_pdu=max_pdu)
    pdu_type, data = assoc.read_pdu("storage association")
    if pdu_type != PDU_ASSOC_RQ:
        raise ProbeError(
            Reason.INVALID_RESPONSE, f"storage association: unexpected PDU 0x{pdu_type:02x}"
        )
    assoc.send_pdus([accept_response(data, max_pdu)], "storage association")
    while True:
        msg = assoc.read_message_counted("storage association", release_ok=True)
        if msg is None:  # A-RELEASE-RQ: the PACS is done
            assoc.send_pdus([RELEASE_RP], "storage association")
            return
        if msg.fields.get(COMMAND_FIELD) == C_ECHO_RQ_FIELD:
            # some PACS verify a move destination with C-ECHO before sending to it
            assoc.send_pdus(
                [c_echo_rsp_pdu(msg.context_id, msg.fields.get(MESSAGE_ID, 0))], "C-ECHO"
            )
            continue
        if msg.fields.get(COMMAND_FIELD) != C_STORE_RQ_FIELD:
            raise ProbeError(
                Reason.INVALID_RESPONSE, "storage association: a request other than C-STORE"
            )
        received.count(msg.data_bytes, msg.received_at)
        rsp = c_store_rsp_pdu(
            msg.context_id,
            msg.fields.get(MESSAGE_ID, 0),
            msg.uids.get(AFFECTED_SOP_CLASS, ""),
            msg.uids.get(AFFECTED_SOP_INSTANCE, ""),
        )
        assoc.send_pdus([rsp], "storage association")


def c_echo_rsp_pdu(context_id: int, message_id: int) -> bytes:
    """A P-DATA-TF holding a successful C-ECHO-RSP (implicit VR LE command set, PS3.7 9.3.5.2)."""
    uid = VERIFICATION.encode() + b"\x00"  # even length
    elements = (
        (AFFECTED_SOP_CLASS, uid),
        (COMMAND_FIELD, struct.pack("<H", C_ECHO_RSP_FIELD)),
        (0x0120, struct.pack("<H", message_id)),  # Message ID Being Responded To
        (0x0800, struct.pack("<H", 0x0101)),  # no data set
        (0x0900, struct.pack("<H", 0x0000)),  # success
    )
    body = b"".join(struct.pack("<HHL", 0, el, len(v)) + v for el, v in elements)
    command = struct.pack("<HHLL", 0, 0, 4, len(body)) + body
    pdv = struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


class StorageSCP:
    """Listening for one run; `received` fills in as the PACS stores. Use via `receiving()`."""

    def __init__(self, sock: socket.socket, deadline: Deadline, max_pdu: int) -> None:
        self.sock = sock
        self.deadline = deadline
        self.max_pdu = max_pdu
        self.received = Received()
        self._stop = threading.Event()
        # close() writes here so the accept loop wakes at once instead of at its next poll
        self._wake_r, self._wake_w = socket.socketpair()
        self._conns: list[socket.socket] = []
        self._workers: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, name="storage-scp", daemon=True)
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            left = self.deadline.remaining()
            if left <= 0:
                return
            try:
                ready, _, _ = select.select([self.sock, self._wake_r], [], [], min(left, 1.0))
                if self._wake_r in ready:
                    return
                if not ready:
                    continue
                conn, _ = self.sock.accept()
            except (OSError, ValueError):
                return  # the listening socket was closed: the run is over
            if len(self._workers) >= MAX_ASSOCIATIONS:
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            enable_rx_timestamps(conn)
            self._conns.append(conn)
            with self.received.lock:
                self.received.associations += 1
            worker = threading.Thread(
                target=self._serve, args=(conn,), name="storage-scp-assoc", daemon=True
            )
            self._workers.append(worker)
            worker.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            serve_association(conn, self.deadline, self.received, self.max_pdu)
        except ProbeError as e:
            if not self._stop.is_set():
                with self.received.lock:
                    self.received.error = self.received.error or e
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def wait_idle(self, seconds: float) -> None:
        """Give the PACS's storage associations up to `seconds` to be released."""
        end = min(seconds, max(self.deadline.remaining(), 0.0))
        for worker in list(self._workers):
            worker.join(timeout=max(end, 0.0))

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._acceptor.join(timeout=1.0)
        for s in (self.sock, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                s.close()
        for conn in list(self._conns):
            with contextlib.suppress(OSError):
                conn.close()
        for worker in self._workers:
            worker.join(timeout=1.0)


@contextlib.contextmanager
def receiving(host: str, port: int, deadline: Deadline, max_pdu: int) -> Iterator[StorageSCP]:
    """Own the listen address for one run (waiting for another run that holds it, within the
    deadline), listen, yield the SCP, and stop listening however the run ends."""
    lock = _address_lock(host, port)
    if not lock.acquire(timeout=max(deadline.left_or_raise(Reason.TIMEOUT, "storage SCP"), 0.0)):
        raise ProbeError(Reason.TIMEOUT, "storage SCP: listen address busy with another run")
    try:
        scp = StorageSCP(_listen(host, port), deadline, max_pdu)
        try:
            yield scp
        finally:
            scp.close()
    finally:
        lock.release()
