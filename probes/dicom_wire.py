"""A DICOM upper-layer client driven directly on a socket, timed at send/receive.

pynetdicom's Association runs a reactor thread that polls its socket and queues, which adds
milliseconds per association; a stopwatch around `ae.associate()` measures that machinery, not
the PACS (DESIGN §4, issue 3). Here pynetdicom is only the codec (PDU and DIMSE encoders and
decoders); this module drives the exchange itself, so that

* each phase is the time from the first byte we send to the last byte we receive,
* every wait is a socket timeout bounded by the probe's deadline,
* a declared PDU length is checked against what we negotiated before anything is allocated.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dsutils import decode as decode_dataset
from pynetdicom.dsutils import encode as encode_dataset
from pynetdicom.pdu import (
    A_ABORT_RQ,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RQ,
    P_DATA_TF,
)
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

from probes.base import Deadline, Phases, ProbeError, Reason, TLSInfo

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"

# PDU types (PS3.8 §9.3)
PDU_ASSOC_RQ, PDU_ASSOC_AC, PDU_ASSOC_RJ, PDU_DATA = 0x01, 0x02, 0x03, 0x04
PDU_RELEASE_RQ, PDU_RELEASE_RP, PDU_ABORT = 0x05, 0x06, 0x07
# Largest association-control PDU we accept (an A-ASSOCIATE-AC with many contexts is a few KiB).
MAX_CONTROL_PDU = 64 * 1024
# Largest DIMSE response (command + identifier) we assemble; a C-FIND identifier is small.
MAX_DIMSE_MESSAGE = 4 * 1024 * 1024

# Name resolution cannot be given a timeout by the socket API; run it on a small pool and wait for
# it with the deadline, so a hung resolver cannot hang a probe.
_resolver = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dns")


def resolve(host: str, port: int, deadline: Deadline, phases: Phases) -> list[tuple[Any, ...]]:
    """getaddrinfo bounded by the deadline; the `dns` phase is only reported for names."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        literal = True
    except OSError:
        literal = False
    t0 = time.perf_counter()
    fut = _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = fut.result(timeout=deadline.left_or_raise(Reason.DNS, "name resolution"))
    except FutureTimeout:
        raise ProbeError(Reason.DNS, "name resolution timed out") from None
    except socket.gaierror:
        raise ProbeError(Reason.DNS, "host name does not resolve") from None
    if not literal:
        phases.add("dns", time.perf_counter() - t0)
    return infos


def open_socket(host: str, port: int, deadline: Deadline, phases: Phases) -> socket.socket:
    """Resolve and connect with TCP_NODELAY; `connect` phase is SYN → SYN-ACK as seen here."""
    infos = resolve(host, port, deadline, phases)
    last: ProbeError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        # Nagle + delayed ACK would stall multi-PDU exchanges by ~40 ms: the agent's fault, not
        # the PACS's (DESIGN §4).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.settimeout(deadline.left_or_raise(Reason.CONNECT_TIMEOUT, "connect"))
            t0 = time.perf_counter()
            sock.connect(addr)
            phases.add("connect", time.perf_counter() - t0)
            return sock
        except TimeoutError:
            sock.close()
            last = ProbeError(Reason.CONNECT_TIMEOUT, "TCP connect timed out")
        except ConnectionRefusedError:
            sock.close()
            last = ProbeError(Reason.REFUSED, "connection refused")
        except ProbeError as e:
            sock.close()
            last = e
        except OSError as e:
            sock.close()
            last = ProbeError(Reason.ERROR, f"connect failed: {e.strerror or type(e).__name__}")
    raise last or ProbeError(Reason.DNS, "host name resolved to no address")


def tls_handshake(
    sock: socket.socket,
    context: ssl.SSLContext,
    server_hostname: str | None,
    deadline: Deadline,
    phases: Phases,
) -> tuple[ssl.SSLSocket, TLSInfo | None]:
    """Wrap and handshake within the deadline; return the socket and the peer's cert expiry."""
    tls = context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=False)
    try:
        tls.settimeout(deadline.left_or_raise(Reason.TIMEOUT, "TLS handshake"))
        t0 = time.perf_counter()
        tls.do_handshake()
        phases.add("tls", time.perf_counter() - t0)
    except TimeoutError:
        tls.close()
        raise ProbeError(Reason.TIMEOUT, "TLS handshake timed out") from None
    except ssl.SSLCertVerificationError as e:
        tls.close()
        raise ProbeError(Reason.TLS, f"certificate verification failed: {e.verify_message}") from None
    except (ssl.SSLError, ConnectionResetError) as e:
        tls.close()
        raise ProbeError(Reason.TLS, f"TLS handshake failed: {type(e).__name__}") from None
    return tls, peer_cert_info(tls)


def peer_cert_info(tls: ssl.SSLSocket) -> TLSInfo | None:
    """Leaf and earliest expiry of the peer's verified chain (leaf only where Python can't tell)."""
    from cryptography import x509

    ders: list[bytes] = []
    chain = getattr(tls, "get_verified_chain", None)  # Python ≥ 3.13
    if chain is not None:
        try:
            ders = [c if isinstance(c, bytes) else c.public_bytes() for c in chain()]
        except (ssl.SSLError, ValueError, AttributeError):
            ders = []
    if not ders:
        leaf = tls.getpeercert(binary_form=True)
        if not leaf:
            return None
        ders = [leaf]
    expiries = [x509.load_der_x509_certificate(d).not_valid_after_utc.timestamp() for d in ders]
    return TLSInfo(leaf_not_after=expiries[0], earliest_not_after=min(expiries))


@dataclass
class AcceptedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str


class DicomAssociation:
    """One association to a DICOM peer, driven synchronously on one socket.

    Every receive is bounded by `deadline`; every phase is recorded in `phases`.
    """

    def __init__(
        self,
        sock: socket.socket,
        deadline: Deadline,
        phases: Phases,
        *,
        max_pdu: int = 16384,
    ) -> None:
        self.sock = sock
        self.deadline = deadline
        self.phases = phases
        self.max_pdu = max_pdu
        self.peer_max_pdu = 16384
        self.contexts: dict[str, AcceptedContext] = {}
        self._open = False
        self._message_id = 0

    # -- framing -----------------------------------------------------------------------------

    def _recv_exact(self, n: int, what: str) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            self.sock.settimeout(self.deadline.left_or_raise(Reason.TIMEOUT, what))
            try:
                chunk = self.sock.recv(min(n - len(buf), 65536))
            except TimeoutError:
                raise ProbeError(Reason.TIMEOUT, f"{what}: no answer within the deadline") from None
            except (ConnectionResetError, BrokenPipeError):
                raise ProbeError(Reason.ABORTED, f"{what}: connection reset by peer") from None
            except ssl.SSLError:
                raise ProbeError(Reason.ABORTED, f"{what}: TLS connection broken") from None
            if not chunk:
                raise ProbeError(Reason.ABORTED, f"{what}: peer closed the connection")
            buf += chunk
        return bytes(buf)

    def read_pdu(self, what: str) -> tuple[int, bytes]:
        """One PDU: (type, whole PDU bytes). Lengths are checked before they are trusted."""
        header = self._recv_exact(6, what)
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in (1, 2, 3, 4, 5, 6, 7):
            raise ProbeError(Reason.INVALID_RESPONSE, f"{what}: unknown PDU type 0x{pdu_type:02x}")
        limit = self.max_pdu if pdu_type == PDU_DATA else MAX_CONTROL_PDU
        if pdu_type in (PDU_ASSOC_RJ, PDU_RELEASE_RQ, PDU_RELEASE_RP, PDU_ABORT):
            limit = 4
        if length > limit or (pdu_type in (PDU_ASSOC_RJ, PDU_RELEASE_RP, PDU_ABORT) and length != 4):
            raise ProbeError(
                Reason.INVALID_RESPONSE, f"{what}: PDU type 0x{pdu_type:02x} declares {length} bytes"
            )
        return pdu_type, header + self._recv_exact(length, what)

    def _send(self, data: bytes, what: str) -> None:
        try:
            self.sock.settimeout(self.deadline.left_or_raise(Reason.TIMEOUT, what))
            self.sock.sendall(data)
        except TimeoutError:
            raise ProbeError(Reason.TIMEOUT, f"{what}: send timed out") from None
        except (ConnectionResetError, BrokenPipeError):
            raise ProbeError(Reason.ABORTED, f"{what}: connection reset by peer") from None

    def _fail_on_abort(self, pdu_type: int, data: bytes, what: str) -> None:
        if pdu_type == PDU_ABORT:
            raise ProbeError(Reason.ABORTED, f"{what}: peer sent A-ABORT")
        if pdu_type == PDU_RELEASE_RQ:
            raise ProbeError(Reason.ABORTED, f"{what}: peer asked to release the association")

    # -- association -------------------------------------------------------------------------

    def associate(
        self,
        calling_aet: str,
        called_aet: str,
        abstract_syntaxes: list[str],
        transfer_syntaxes: tuple[str, ...] = (IMPLICIT_VR_LE, EXPLICIT_VR_LE),
    ) -> None:
        """A-ASSOCIATE-RQ → AC (phase `associate`), or ProbeError(rejected/aborted/...)."""
        prim = A_ASSOCIATE()
        prim.application_context_name = APPLICATION_CONTEXT
        prim.calling_ae_title = calling_aet
        prim.called_ae_title = called_aet
        cxs = []
        for i, syntax in enumerate(abstract_syntaxes):
            cx = PresentationContext()
            cx.context_id = 2 * i + 1
            cx.abstract_syntax = syntax
            cx.transfer_syntax = list(transfer_syntaxes)
            cxs.append(cx)
        prim.presentation_context_definition_list = cxs
        ml = MaximumLengthNotification()
        ml.maximum_length_received = self.max_pdu
        impl = ImplementationClassUIDNotification()
        impl.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
        ver = ImplementationVersionNameNotification()
        ver.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
        prim.user_information = [ml, impl, ver]
        rq = A_ASSOCIATE_RQ()
        rq.from_primitive(prim)
        payload = rq.encode()

        t0 = time.perf_counter()
        self._send(payload, "association")
        pdu_type, data = self.read_pdu("association")
        self.phases.add("associate", time.perf_counter() - t0)

        self._fail_on_abort(pdu_type, data, "association")
        if pdu_type == PDU_ASSOC_RJ:
            rj = A_ASSOCIATE_RJ()
            rj.decode(data)
            raise ProbeError(
                Reason.REJECTED,
                f"association rejected (result {rj.result}, source {rj.source}, "
                f"reason {rj.reason_diagnostic})",
            )
        if pdu_type != PDU_ASSOC_AC:
            raise ProbeError(Reason.INVALID_RESPONSE, f"association: unexpected PDU 0x{pdu_type:02x}")
        ac = A_ASSOCIATE_AC()
        try:
            ac.decode(data)
            accepted = ac.to_primitive()
        except Exception:  # noqa: BLE001 - any decoder failure on hostile input is a bad response
            raise ProbeError(Reason.INVALID_RESPONSE, "association: malformed A-ASSOCIATE-AC") from None
        for item in accepted.user_information or []:
            if isinstance(item, MaximumLengthNotification):
                self.peer_max_pdu = item.maximum_length_received or 0
        by_id = {cx.context_id: cx.abstract_syntax for cx in cxs}
        for cx in accepted.presentation_context_definition_results_list or []:
            if cx.result == 0 and cx.context_id in by_id and cx.transfer_syntax:
                syntax = str(by_id[cx.context_id])
                self.contexts[syntax] = AcceptedContext(
                    cx.context_id, syntax, str(cx.transfer_syntax[0])
                )
        self._open = True
        missing = [s for s in abstract_syntaxes if s not in self.contexts]
        if missing:
            raise ProbeError(
                Reason.REJECTED, "association accepted, but no presentation context for the service"
            )

    # -- DIMSE ---------------------------------------------------------------------------------

    def next_message_id(self) -> int:
        self._message_id = (self._message_id % 65535) + 1
        return self._message_id

    def encode_dimse(self, message: DIMSEMessage, abstract_syntax: str) -> list[bytes]:
        """Encode a request into P-DATA-TF PDUs up front, so encoding is not timed as wire."""
        cx = self.contexts[abstract_syntax]
        max_len = self.peer_max_pdu or 2**31
        return [P_DATA_TF(p).encode() for p in message.encode_msg(cx.context_id, max_len)]

    def recv_dimse(self) -> DIMSEMessage:
        """Read P-DATA-TF PDUs until one DIMSE message is complete."""
        msg = DIMSEMessage()
        total = 0
        while True:
            pdu_type, data = self.read_pdu("DIMSE response")
            self._fail_on_abort(pdu_type, data, "DIMSE response")
            if pdu_type != PDU_DATA:
                raise ProbeError(Reason.INVALID_RESPONSE, f"DIMSE: unexpected PDU 0x{pdu_type:02x}")
            total += len(data)
            if total > MAX_DIMSE_MESSAGE:
                raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE response larger than allowed")
            try:
                pdu = P_DATA_TF()
                pdu.decode(data)
                done = msg.decode_msg(pdu.to_primitive())
            except Exception:  # noqa: BLE001 - malformed input from the peer
                raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE: malformed P-DATA") from None
            if done:
                return msg

    def decode_identifier(self, msg: DIMSEMessage, abstract_syntax: str) -> Dataset:
        ts = self.contexts[abstract_syntax].transfer_syntax
        raw = msg.data_set.getvalue() if isinstance(msg.data_set, BytesIO) else b""
        try:
            return decode_dataset(BytesIO(raw), ts == IMPLICIT_VR_LE, True)
        except Exception:  # noqa: BLE001
            raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE: malformed identifier") from None

    @staticmethod
    def encode_identifier(ds: Dataset, transfer_syntax: str) -> BytesIO:
        raw = encode_dataset(ds, transfer_syntax == IMPLICIT_VR_LE, True)
        if raw is None:
            raise ProbeError(Reason.ERROR, "could not encode the query identifier")
        return BytesIO(raw)

    def exchange(
        self, message: DIMSEMessage, abstract_syntax: str
    ) -> Iterator[tuple[DIMSEMessage, float]]:
        """Send a request; yield each response with seconds since the first request byte.

        The caller stops iterating at the final response. The `dimse` phase is request → final.
        """
        pdus = self.encode_dimse(message, abstract_syntax)
        t0 = time.perf_counter()
        for pdu in pdus:
            self._send(pdu, "DIMSE request")
        while True:
            rsp = self.recv_dimse()
            yield rsp, time.perf_counter() - t0

    # -- release -------------------------------------------------------------------------------

    def release(self) -> None:
        """A-RELEASE-RQ → RP (phase `release`)."""
        if not self._open:
            return
        t0 = time.perf_counter()
        self._send(A_RELEASE_RQ().encode(), "release")
        while True:
            pdu_type, data = self.read_pdu("release")
            if pdu_type == PDU_RELEASE_RP:
                break
            if pdu_type == PDU_DATA:  # a late response to something we stopped waiting for
                continue
            self._fail_on_abort(pdu_type, data, "release")
            raise ProbeError(Reason.INVALID_RESPONSE, f"release: unexpected PDU 0x{pdu_type:02x}")
        self.phases.add("release", time.perf_counter() - t0)
        self._open = False

    def abort(self) -> None:
        """Best effort A-ABORT, never blocking past a short bound."""
        if not self._open:
            return
        self._open = False
        try:
            self.sock.settimeout(0.2)
            abort = A_ABORT_RQ()
            abort.source = 0
            abort.reason_diagnostic = 0
            self.sock.sendall(abort.encode())
        except (OSError, ValueError):
            pass


def dimse_status(msg: DIMSEMessage) -> int:
    status = getattr(msg.command_set, "Status", None)
    if status is None:
        raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE response without a status")
    return int(status)


def command_field(msg: DIMSEMessage) -> int:
    return int(getattr(msg.command_set, "CommandField", -1))
