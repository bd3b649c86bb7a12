"""A DICOM upper-layer client driven directly on a socket, timed at send/receive.

pynetdicom's Association runs a reactor thread that polls its socket and queues, which adds
milliseconds per association; a stopwatch around `ae.associate()` measures that machinery, not
the PACS. Here pynetdicom is only the codec (PDU and DIMSE encoders and
decoders); this module drives the exchange itself, so that

* each phase is the time from the first byte we send to the last byte we receive: requests are
  encoded before the clock starts, and responses are decoded only after it stops (a C-FIND's
  pending responses are read as they arrive and decoded once the final one is in, so decoding
  them cannot delay reading the next one),
* where the OS tells (Linux), the end of a phase is the kernel's receive timestamp of the last
  segment (SO_TIMESTAMPNS), and `connect` is the kernel's own SYN → SYN-ACK round trip
  (TCP_INFO) unless the SYN had to be retransmitted: the time our thread then waits for a CPU
  is the agent host's scheduling delay, not the PACS's latency,
* the socket sets TCP_NODELAY (our requests leave at once) and, where the OS has it,
  TCP_QUICKACK before every wait (our ACK leaves at once, so a peer that leaves Nagle on and
  writes a PDU in two pieces is not held up ~40 ms by our delayed ACK: that stall would be the
  agent's doing, not the PACS's),
* every wait is a socket timeout bounded by the probe's deadline,
* a declared PDU length is checked against what we negotiated before anything is allocated.
"""

from __future__ import annotations

import socket
import ssl
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import lru_cache
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
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext

from probes.base import Deadline, Phases, ProbeError, Reason, TLSInfo
from probes.dicom_status import reject_failure

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
# Largest run of responses to one request held before decoding (pending C-FIND matches).
MAX_EXCHANGE_BYTES = 16 * 1024 * 1024
PENDING_STATUSES = (0xFF00, 0xFF01)
RECV_CHUNK = 65536
NO_DATA_SET = 0x0101
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
# Kernel receive timestamps (CLOCK_REALTIME) as ancillary data; Python does not name the option.
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
_TS_ANCILLARY = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 0
_TCP_INFO = getattr(socket, "TCP_INFO", None)  # Linux


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


def kernel_connect_rtt(sock: socket.socket) -> float | None:
    """SYN → SYN-ACK as the kernel timed it, read from TCP_INFO right after connect().

    The first RTT sample of a connection is the handshake's; tcpi_rtt holds it in µs until data
    flows. None when the OS does not tell or the SYN was retransmitted (the sample then starts at
    the retransmission, and the wait before it is latency too).
    """
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
    except OSError:
        return None
    if len(info) < 104:
        return None
    rtt_us = struct.unpack_from("I", info, 68)[0]
    total_retrans = struct.unpack_from("I", info, 100)[0]
    if rtt_us == 0 or total_retrans or info[2]:  # info[2]: tcpi_retransmits
        return None
    return rtt_us / 1e6


# Smallest maximum PDU length a peer may announce: one PDV item header (6 bytes) + 1 byte of data.
MIN_PEER_PDU = 7

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
    if literal:  # no lookup to bound: skip the hand-over to the resolver pool (two thread switches)
        deadline.left_or_raise(Reason.DNS, "name resolution")
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    t0 = time.perf_counter()
    fut = _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = fut.result(timeout=deadline.left_or_raise(Reason.DNS, "name resolution"))
    except FutureTimeout:
        raise ProbeError(Reason.DNS, f"{host}: name resolution timed out") from None
    except socket.gaierror:
        raise ProbeError(Reason.DNS, f"{host} does not resolve") from None
    phases.add("dns", time.perf_counter() - t0)
    return infos


def open_socket(host: str, port: int, deadline: Deadline, phases: Phases) -> socket.socket:
    """Resolve and connect with TCP_NODELAY; the `connect` phase is SYN → SYN-ACK."""
    infos = resolve(host, port, deadline, phases)
    last: ProbeError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        # Nagle + delayed ACK would stall multi-PDU exchanges by ~40 ms: the agent's fault, not
        # the PACS's. TCP_QUICKACK is re-armed before each receive (DicomAssociation).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        enable_rx_timestamps(sock)
        try:
            sock.settimeout(deadline.left_or_raise(Reason.CONNECT_TIMEOUT, "connect"))
            t0 = time.perf_counter()
            sock.connect(addr)
            elapsed = time.perf_counter() - t0
            rtt = kernel_connect_rtt(sock)
            phases.add("connect", min(elapsed, rtt) if rtt is not None else elapsed)
            return sock
        except TimeoutError:
            sock.close()
            last = ProbeError(Reason.CONNECT_TIMEOUT, f"TCP connect to {_where(addr)} timed out")
        except ConnectionRefusedError:
            sock.close()
            last = ProbeError(Reason.REFUSED, f"connection refused by {_where(addr)}")
        except ProbeError as e:
            sock.close()
            last = e
        except OSError as e:
            sock.close()
            last = ProbeError(
                Reason.ERROR, f"connect to {_where(addr)} failed: {e.strerror or type(e).__name__}"
            )
    raise last or ProbeError(Reason.DNS, f"{host} resolved to no address")


def _where(addr: Any) -> str:
    """host:port of a socket address, IPv6 in brackets (messages name the peer that failed)."""
    host, port = str(addr[0]), addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def tls_settings_message(e: BaseException) -> str:
    """Why the TLS settings could not be used, naming the file that could not be read."""
    if isinstance(e, OSError) and e.filename is not None and not isinstance(e, ssl.SSLError):
        return f"TLS settings unusable: cannot read {e.filename}: {e.strerror or type(e).__name__}"
    return f"TLS settings unusable: {type(e).__name__}"


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
        raise ProbeError(
            Reason.TLS, f"certificate verification failed: {e.verify_message}"
        ) from None
    except (ssl.SSLError, ConnectionResetError) as e:
        tls.close()
        raise ProbeError(Reason.TLS, tls_failure_message(e)) from None
    return tls, peer_cert_info(tls)


def tls_broken(e: ssl.SSLError, what: str) -> ProbeError:
    """A TLS error after the handshake. With TLS 1.3 a server that refuses our certificate (or
    wants one) says so with an alert only after the client's handshake has completed: that is a
    certificate problem (`tls`); anything else breaking the TLS stream is `aborted`."""
    alert = (e.reason or "").upper()
    if "ALERT" in alert and "CLOSE_NOTIFY" not in alert:
        name = alert.split("ALERT_", 1)[-1].replace("_", " ").lower()
        return ProbeError(Reason.TLS, f"{what}: the peer ended TLS with alert '{name}'")
    return ProbeError(Reason.ABORTED, f"{what}: TLS connection broken")


def tls_failure_message(e: BaseException) -> str:
    """A handshake failure in words; no protocol version in common is named as such."""
    why = str(getattr(e, "reason", "") or "")
    if "VERSION" in why or "UNSUPPORTED_PROTOCOL" in why or "NO_PROTOCOLS" in why:
        return "TLS handshake failed: no TLS version in common (see config.tls.minVersion)"
    return f"TLS handshake failed: {type(e).__name__}"


# DER encoding for _ssl.Certificate.public_bytes (the private chain API hands those out)
_ENCODING_DER = getattr(getattr(ssl, "_ssl", None), "ENCODING_DER", 2)


def verified_chain_der(tls: Any) -> list[bytes]:
    """DER of the peer's verified chain, leaf first; [] where Python cannot tell.

    `tls` is an ssl.SSLSocket or the _ssl object under it (what httpcore hands out). The public
    SSLSocket.get_verified_chain() exists from Python 3.13; the _ssl object has had its own since
    3.10 (private, returns Certificate objects).
    """
    for owner in (tls, getattr(tls, "_sslobj", None)):
        get = getattr(owner, "get_verified_chain", None) if owner is not None else None
        if get is None:
            continue
        try:
            return [
                c if isinstance(c, bytes) else bytes(c.public_bytes(_ENCODING_DER))
                for c in get() or []
            ]
        except (ssl.SSLError, ValueError, AttributeError, TypeError):
            return []
    return []


_TLS_VERSIONS = {
    "TLSv1": "TLS 1.0",
    "TLSv1.1": "TLS 1.1",
    "TLSv1.2": "TLS 1.2",
    "TLSv1.3": "TLS 1.3",
}


def tls_version_label(tls: Any) -> str | None:
    """The negotiated version as blackbox_exporter labels it ("TLS 1.3"); a bounded set."""
    try:
        raw = tls.version()
    except (AttributeError, ValueError, ssl.SSLError):
        return None
    return _TLS_VERSIONS.get(raw, "other") if raw else None


def peer_cert_info(tls: Any) -> TLSInfo | None:
    """Leaf expiry, earliest expiry over the verified chain (an intermediate or root can expire
    before the leaf) and the negotiated version; leaf only where the chain is not available."""
    from cryptography import x509

    leaf = tls.getpeercert(True)  # positional: the _ssl object takes no keyword
    if not leaf:
        return None
    ders = [leaf, *verified_chain_der(tls)]
    expiries = [x509.load_der_x509_certificate(d).not_valid_after_utc.timestamp() for d in ders]
    return TLSInfo(
        leaf_not_after=expiries[0],
        earliest_not_after=min(expiries),
        version=tls_version_label(tls),
    )


def user_information(max_pdu: int) -> list[Any]:
    """The user information items every association PDU of ours carries: the maximum PDU length
    we receive and our implementation's class UID and version name (PS3.7 D.3.3)."""
    ml = MaximumLengthNotification()
    ml.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    ver = ImplementationVersionNameNotification()
    ver.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    return [ml, impl, ver]


# One entry per target × DICOM probe (the called AE title is in the key): sized for 5,000 targets;
# at 256 an agent with more than ~100 targets re-encoded every request (bench/scale, py-spy).
@lru_cache(maxsize=16384)
def associate_rq_bytes(
    calling_aet: str,
    called_aet: str,
    abstract_syntaxes: tuple[str, ...],
    transfer_syntaxes: tuple[str, ...],
    max_pdu: int,
    scp_roles: tuple[str, ...] = (),
    role_transfer_syntaxes: tuple[str, ...] = (),
) -> bytes:
    """The encoded A-ASSOCIATE-RQ; context i (from 0) gets id 2i+1.

    A probe sends the same request every run: encoding it once saves most of the CPU a C-ECHO
    costs (pynetdicom's encoder builds and validates pydicom objects). Syntaxes in `scp_roles`
    are proposed with SCP role selection (PS3.7 D.3.3.4: we take C-STOREs, as C-GET needs) and
    with `role_transfer_syntaxes` when given.
    """
    prim = A_ASSOCIATE()
    prim.application_context_name = APPLICATION_CONTEXT
    prim.calling_ae_title = calling_aet
    prim.called_ae_title = called_aet
    cxs = []
    for i, syntax in enumerate(abstract_syntaxes):
        cx = PresentationContext()
        cx.context_id = 2 * i + 1
        cx.abstract_syntax = syntax
        roled = syntax in scp_roles and role_transfer_syntaxes
        cx.transfer_syntax = list(role_transfer_syntaxes if roled else transfer_syntaxes)
        cxs.append(cx)
    prim.presentation_context_definition_list = cxs
    roles = []
    for syntax in scp_roles:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = syntax
        role.scu_role = False
        role.scp_role = True
        roles.append(role)
    prim.user_information = [*user_information(max_pdu), *roles]
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(prim)
    return bytes(rq.encode())


@lru_cache(maxsize=64)
def decode_associate_ac(data: bytes) -> tuple[A_ASSOCIATE_AC, A_ASSOCIATE]:
    """An A-ASSOCIATE-AC decoded with pynetdicom, cached on its bytes (read, never modified).

    A PACS answers a probe's (cached) request with the same bytes every run; decoding the answer
    to a C-GET's 31 contexts validated ~100 UIDs through pydicom, more CPU than the rest of the
    run (bench/imaging, BENCHMARKS.md). A decoding error is raised again, never cached.
    """
    ac = A_ASSOCIATE_AC()
    ac.decode(data)
    return ac, ac.to_primitive()


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
        # perf_counter() time at which the last byte of the latest PDU reached our socket
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

    # -- framing -----------------------------------------------------------------------------

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
            self.sock.settimeout(self.deadline.left_or_raise(Reason.TIMEOUT, what))
            self._ack_now()
            arrived: float | None = None
            try:
                if self._rx_ts:
                    chunk, ancillary, _, _ = self.sock.recvmsg(RECV_CHUNK, _TS_ANCILLARY)
                    arrived = rx_timestamp(ancillary)
                else:
                    chunk = self.sock.recv(RECV_CHUNK)
            except TimeoutError:
                ms = f"{self.deadline.budget * 1000:.0f} ms"
                if what == "association":
                    raise ProbeError(Reason.TIMEOUT, f"no A-ASSOCIATE answer within {ms}") from None
                raise ProbeError(Reason.TIMEOUT, f"{what}: no answer within {ms}") from None
            except (ConnectionResetError, BrokenPipeError):
                raise ProbeError(Reason.ABORTED, f"{what}: connection reset by peer") from None
            except ssl.SSLError as e:
                raise tls_broken(e, what) from None
            now, wall = time.perf_counter(), time.time()
            if not chunk:
                raise ProbeError(Reason.ABORTED, f"{what}: peer closed the connection")
            lag = 0.0
            if arrived is not None:
                # how long the data sat in the socket before this thread got to it; never before
                # our last request left (guards against a step of the wall clock)
                lag = min(max(wall - arrived, 0.0), max(now - self._sent_at, 0.0))
            self._rx.append((chunk, now - lag))
            self._rx_len += len(chunk)

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

    def read_pdu(self, what: str) -> tuple[int, bytes]:
        """One PDU: (type, whole PDU bytes). Lengths are checked before they are trusted."""
        header = self._recv_exact(6, what)
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in (1, 2, 3, 4, 5, 6, 7):
            raise ProbeError(Reason.INVALID_RESPONSE, f"{what}: unknown PDU type 0x{pdu_type:02x}")
        limit = self.max_pdu if pdu_type == PDU_DATA else MAX_CONTROL_PDU
        if pdu_type in (PDU_ASSOC_RJ, PDU_RELEASE_RQ, PDU_RELEASE_RP, PDU_ABORT):
            limit = 4
        fixed = pdu_type in (PDU_ASSOC_RJ, PDU_RELEASE_RP, PDU_ABORT)
        if length > limit or (fixed and length != 4):
            raise ProbeError(
                Reason.INVALID_RESPONSE,
                f"{what}: PDU type 0x{pdu_type:02x} declares {length} bytes",
            )
        return pdu_type, header + self._recv_exact(length, what)

    def _send(self, data: bytes, what: str) -> float:
        """Send all of `data`; returns perf_counter() taken just before the first byte left.

        Everything else (deadline arithmetic, the socket timeout) is done before that clock
        reading, so the phase starts as close to the send() system call as Python allows.
        """
        try:
            self.sock.settimeout(self.deadline.left_or_raise(Reason.TIMEOUT, what))
            started = time.perf_counter()
            self.sock.sendall(data)
            self._sent_at = time.perf_counter()
        except TimeoutError:
            raise ProbeError(Reason.TIMEOUT, f"{what}: send timed out") from None
        except (ConnectionResetError, BrokenPipeError):
            raise ProbeError(Reason.ABORTED, f"{what}: connection reset by peer") from None
        except ssl.SSLError as e:
            raise tls_broken(e, what) from None
        return started

    def _fail_on_abort(self, pdu_type: int, data: bytes, what: str) -> None:
        if pdu_type == PDU_ABORT:
            raise ProbeError(Reason.ABORTED, f"{what}: peer sent A-ABORT")
        if pdu_type == PDU_RELEASE_RQ:
            raise ProbeError(Reason.ABORTED, f"{what}: peer asked to release the association")

    # -- association -------------------------------------------------------------------------

    def request_association(self, payload: bytes) -> A_ASSOCIATE:
        """Send an encoded A-ASSOCIATE-RQ and take the answer (phase `associate`): the accepted
        association's primitive, or ProbeError(rejected/aborted/invalid_response/...)."""
        t0 = self._send(payload, "association")
        pdu_type, data = self.read_pdu("association")
        self.phases.add("associate", self.received_at - t0)

        self._fail_on_abort(pdu_type, data, "association")
        if pdu_type == PDU_ASSOC_RJ:
            rj = A_ASSOCIATE_RJ()
            rj.decode(data)
            # PS3.8 Table 9-21 names, e.g. "called AE title not recognized"
            # read_pdu lets only a 4-byte body through, so decode() has set all three fields
            raise reject_failure(rj.result or 0, rj.source or 0, rj.reason_diagnostic or 0)
        if pdu_type != PDU_ASSOC_AC:
            raise ProbeError(
                Reason.INVALID_RESPONSE, f"association: unexpected PDU 0x{pdu_type:02x}"
            )
        try:
            ac, accepted = decode_associate_ac(data)
        except Exception:  # noqa: BLE001 - any decoder failure on hostile input is a bad response
            raise ProbeError(
                Reason.INVALID_RESPONSE, "association: malformed A-ASSOCIATE-AC"
            ) from None
        # PS3.8 9.3.3: version 1 is bit 0 of the protocol version; the application context
        # item is mandatory and names DICOM's (PS3.7 A.2). The decoder checks neither.
        if not ac.protocol_version & 1 or ac.application_context_name != APPLICATION_CONTEXT:
            raise ProbeError(Reason.INVALID_RESPONSE, "association: malformed A-ASSOCIATE-AC")
        for item in accepted.user_information or []:
            if isinstance(item, MaximumLengthNotification):
                self.peer_max_pdu = item.maximum_length_received or 0
        if 0 < self.peer_max_pdu < MIN_PEER_PDU:
            # a PDV item needs 6 header bytes + 1: nothing can be sent within such a limit
            raise ProbeError(
                Reason.INVALID_RESPONSE,
                f"association: peer's maximum PDU length {self.peer_max_pdu} is unusable",
            )
        return accepted

    def associate(
        self,
        calling_aet: str,
        called_aet: str,
        abstract_syntaxes: list[str],
        transfer_syntaxes: tuple[str, ...] = (IMPLICIT_VR_LE, EXPLICIT_VR_LE),
        *,
        scp_roles: tuple[str, ...] = (),
        role_transfer_syntaxes: tuple[str, ...] = (),
    ) -> None:
        """A-ASSOCIATE-RQ → AC (phase `associate`), or ProbeError(rejected/aborted/...).

        Contexts in `scp_roles` (storage SOP classes a C-GET may send back) are optional: the
        peer may refuse some of them without failing the association."""
        payload = associate_rq_bytes(
            calling_aet, called_aet, tuple(abstract_syntaxes), tuple(transfer_syntaxes),
            self.max_pdu, tuple(scp_roles), tuple(role_transfer_syntaxes),
        )
        # the role contexts' syntaxes are proposed too (checked against the peer's choice below)
        transfer_syntaxes = tuple(dict.fromkeys((*transfer_syntaxes, *role_transfer_syntaxes)))
        by_id = {2 * i + 1: syntax for i, syntax in enumerate(abstract_syntaxes)}

        accepted = self.request_association(payload)
        for cx in accepted.presentation_context_definition_results_list or []:
            if cx.result == 0 and cx.context_id in by_id and cx.transfer_syntax:
                if str(cx.transfer_syntax[0]) not in transfer_syntaxes:
                    # PS3.8 9.3.3.2: the acceptor picks one of the proposed syntaxes; encoding
                    # in any other would send the PACS bytes it did not agree to read
                    raise ProbeError(
                        Reason.INVALID_RESPONSE,
                        "association: peer accepted a transfer syntax that was not proposed",
                    )
                syntax = str(by_id[cx.context_id])
                self.contexts[syntax] = AcceptedContext(
                    cx.context_id, syntax, str(cx.transfer_syntax[0])
                )
        self._open = True
        missing = [s for s in abstract_syntaxes if s not in self.contexts and s not in scp_roles]
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

    def recv_message_raw(self) -> tuple[list[bytes], int | None]:
        """Read the P-DATA-TF PDUs of one DIMSE message without decoding it.

        Returns the PDUs and the message's Status as read straight from the command set (None if
        absent); `received_at` is then the time its last byte arrived. Only PDV headers and the
        command's fixed-layout elements are looked at, so reading stays cheap and prompt.
        """
        units: list[bytes] = []
        total = 0
        command = bytearray()
        fields: dict[int, int] | None = None
        while True:
            pdu_type, data = self.read_pdu("DIMSE response")
            self._fail_on_abort(pdu_type, data, "DIMSE response")
            if pdu_type != PDU_DATA:
                raise ProbeError(Reason.INVALID_RESPONSE, f"DIMSE: unexpected PDU 0x{pdu_type:02x}")
            total += len(data)
            if total > MAX_DIMSE_MESSAGE:
                raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE response larger than allowed")
            units.append(data)
            if len(data) <= 6:  # PS3.8 9.3.5: a P-DATA-TF carries one or more PDV items
                raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE: P-DATA without a PDV item")
            done = False
            off = 6
            while off < len(data):
                if off + 6 > len(data):
                    raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE: malformed P-DATA")
                item_len = struct.unpack_from(">L", data, off)[0]
                if item_len < 2 or off + 4 + item_len > len(data):
                    raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE: malformed P-DATA")
                if data[off + 4] not in {cx.context_id for cx in self.contexts.values()}:
                    raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE: PDV on a context not agreed")
                control = data[off + 5]
                fragment = data[off + 6 : off + 4 + item_len]
                off += 4 + item_len
                if control & 0x01:  # command fragment
                    command += fragment
                    if control & 0x02:
                        fields = command_fields(bytes(command))
                        done = fields.get(0x0800, NO_DATA_SET) == NO_DATA_SET
                elif fields is None:  # PS3.7 6.3.1: the command set comes first
                    raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE: data set before a command")
                elif control & 0x02:  # last data-set fragment
                    done = True
            if done:
                assert fields is not None
                return units, fields.get(0x0900)

    @staticmethod
    def decode_message(units: list[bytes]) -> DIMSEMessage:
        """Decode the PDUs of one DIMSE message with pynetdicom's codec."""
        msg = DIMSEMessage()
        done = False
        for data in units:
            try:
                pdu = P_DATA_TF()
                pdu.decode(data)
                done = msg.decode_msg(pdu.to_primitive())
            except Exception:  # noqa: BLE001 - malformed input from the peer
                raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE: malformed P-DATA") from None
        if not done:
            raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE: incomplete message")
        return msg

    def recv_dimse(self) -> DIMSEMessage:
        """Read and decode one DIMSE message."""
        units, _ = self.recv_message_raw()
        return self.decode_message(units)

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

    def send_request(self, pdus: list[bytes]) -> float:
        """Send a request's PDUs; returns the perf_counter() at its first byte (for a probe that
        reads the responses itself, as the worklist probe counts them without decoding)."""
        t0 = self._send(pdus[0], "DIMSE request")
        for pdu in pdus[1:]:
            self._send(pdu, "DIMSE request")
        return t0

    def exchange(
        self, message: DIMSEMessage | list[bytes], abstract_syntax: str
    ) -> Iterator[tuple[DIMSEMessage, float]]:
        """Send a request; yield each response with seconds from our first request byte to the
        last byte of that response, the final (non-pending) response last. `message` may be
        the request's PDUs from encode_dimse() (the probes encode each request once and reuse
        it: pydicom's encoder was ~15 % of the agent's CPU at 1,000 targets).

        All responses are read before any is decoded: decoding a pending C-FIND response takes
        longer than the peer needs to send the next one, and would be counted as the peer's
        time. The `dimse` phase is request → final response.
        """
        pdus = message if isinstance(message, list) else self.encode_dimse(message, abstract_syntax)
        received: list[tuple[list[bytes], float]] = []
        total = 0
        t0 = self._send(pdus[0], "DIMSE request")
        for pdu in pdus[1:]:
            self._send(pdu, "DIMSE request")
        while True:
            units, status = self.recv_message_raw()
            received.append((units, self.received_at - t0))
            total += sum(len(u) for u in units)
            if total > MAX_EXCHANGE_BYTES:
                raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE responses larger than allowed")
            if status not in PENDING_STATUSES:
                break
        for units, elapsed in received:
            yield self.decode_message(units), elapsed

    # -- release -------------------------------------------------------------------------------

    def release(self) -> None:
        """A-RELEASE-RQ → RP (phase `release`)."""
        if not self._open:
            return
        rq = A_RELEASE_RQ().encode()
        t0 = self._send(rq, "release")
        while True:
            pdu_type, data = self.read_pdu("release")
            if pdu_type == PDU_RELEASE_RP:
                break
            if pdu_type == PDU_DATA:  # a late response to something we stopped waiting for
                continue
            self._fail_on_abort(pdu_type, data, "release")
            raise ProbeError(Reason.INVALID_RESPONSE, f"release: unexpected PDU 0x{pdu_type:02x}")
        self.phases.add("release", self.received_at - t0)
        self._open = False

    # -- sub-operations (C-GET's C-STOREs on this association; a storage SCP's) ----------------

    def send_pdus(self, pdus: list[bytes], what: str) -> float:
        """Send encoded PDUs; returns perf_counter() just before the first byte left."""
        started = self._send(pdus[0], what)
        for pdu in pdus[1:]:
            self._send(pdu, what)
        return started

    def read_message_counted(self, what: str, *, release_ok: bool = False) -> CountedMessage | None:
        """One DIMSE message whose data set is counted and dropped, never kept or decoded.

        An image can be far larger than MAX_DIMSE_MESSAGE: only the command set is assembled
        (bounded), the data-set fragments are counted as they pass. `received_at` is then when
        the message's last byte arrived. With `release_ok` (a storage SCP) a peer's
        A-RELEASE-RQ between messages returns None.
        """
        command = bytearray()
        fields: dict[int, int] | None = None
        context_id = 0
        data_bytes = 0
        while True:
            pdu_type, data = self.read_pdu(what)
            if release_ok and pdu_type == PDU_RELEASE_RQ and not command:
                return None
            self._fail_on_abort(pdu_type, data, what)
            if pdu_type != PDU_DATA:
                raise ProbeError(
                    Reason.INVALID_RESPONSE, f"{what}: unexpected PDU 0x{pdu_type:02x}"
                )
            done = False
            off = 6
            while off < len(data):
                if off + 6 > len(data):
                    raise ProbeError(Reason.INVALID_RESPONSE, f"{what}: malformed P-DATA")
                item_len = struct.unpack_from(">L", data, off)[0]
                if item_len < 2 or off + 4 + item_len > len(data):
                    raise ProbeError(Reason.INVALID_RESPONSE, f"{what}: malformed P-DATA")
                context_id, control = data[off + 4], data[off + 5]
                size = item_len - 2
                if control & 0x01:  # command fragment
                    command += data[off + 6 : off + 4 + item_len]
                    if len(command) > MAX_CONTROL_PDU:
                        raise ProbeError(Reason.INVALID_RESPONSE, f"{what}: command too large")
                    if control & 0x02:
                        fields = command_fields(bytes(command))
                        done = fields.get(0x0800, NO_DATA_SET) == NO_DATA_SET
                elif fields is None:
                    raise ProbeError(Reason.INVALID_RESPONSE, f"{what}: data set before command")
                else:
                    data_bytes += size
                    done = bool(control & 0x02)
                off += 4 + item_len
            if done:
                assert fields is not None
                return CountedMessage(
                    context_id, fields, command_uids(bytes(command)), data_bytes, self.received_at
                )

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


@dataclass
class CountedMessage:
    """A DIMSE message read by read_message_counted(): its command, the size of its data set."""

    context_id: int
    fields: dict[int, int]  # the command's US elements: CommandField, MessageID, Status, counts
    uids: dict[int, str]  # the command's UI elements: Affected SOP Class/Instance UID
    data_bytes: int  # data-set bytes received (counted, then dropped)
    received_at: float  # perf_counter() when the last byte reached the socket


# Command set elements (group 0000, PS3.7 Annex E)
AFFECTED_SOP_CLASS, AFFECTED_SOP_INSTANCE = 0x0002, 0x1000
COMMAND_FIELD, MESSAGE_ID, STATUS = 0x0100, 0x0110, 0x0900
REMAINING, COMPLETED, FAILED, WARNING = 0x1020, 0x1021, 0x1022, 0x1023
C_STORE_RQ_FIELD, C_STORE_RSP_FIELD = 0x0001, 0x8001


def command_uids(command: bytes) -> dict[int, str]:
    """The Affected SOP Class/Instance UIDs of an encoded command set (implicit VR LE)."""
    out: dict[int, str] = {}
    off = 0
    while off + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHL", command, off)
        off += 8
        if off + length > len(command):
            break
        if group == 0 and element in (AFFECTED_SOP_CLASS, AFFECTED_SOP_INSTANCE) and length <= 64:
            out[element] = command[off : off + length].decode("ascii", "replace").strip("\x00 ")
        off += length
    return out


def _ui(value: str) -> bytes:
    raw = value.encode("ascii", "replace")
    return raw + b"\x00" if len(raw) % 2 else raw


def c_store_rsp_pdu(
    context_id: int, message_id: int, sop_class: str, sop_instance: str, status: int = 0x0000
) -> bytes:
    """A P-DATA-TF holding a C-STORE-RSP (no data set), encoded by hand.

    A retrieve answers one of these per image; the command set is six fixed elements in implicit
    VR little endian (PS3.7 9.3.1.2), so building it through pydicom would only cost CPU.
    """
    elements = (
        (AFFECTED_SOP_CLASS, _ui(sop_class)),
        (COMMAND_FIELD, struct.pack("<H", C_STORE_RSP_FIELD)),
        (0x0120, struct.pack("<H", message_id)),  # Message ID Being Responded To
        (0x0800, struct.pack("<H", NO_DATA_SET)),
        (STATUS, struct.pack("<H", status)),
        (AFFECTED_SOP_INSTANCE, _ui(sop_instance)),
    )
    body = b"".join(struct.pack("<HHL", 0, el, len(v)) + v for el, v in elements)
    command = struct.pack("<HHLL", 0, 0, 4, len(body)) + body
    pdv = struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command
    return struct.pack(">BBL", PDU_DATA, 0, len(pdv)) + pdv


def dimse_status(msg: DIMSEMessage) -> int:
    status = getattr(msg.command_set, "Status", None)
    if status is None:
        raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE response without a status")
    return int(status)


def command_fields(command: bytes) -> dict[int, int]:
    """The 2-byte (US) elements of an encoded command set: {element number: value}.

    A command set is always implicit VR little endian, group 0000 (PS3.7 §6.3.1); this reads
    just enough of it to tell a pending response from the final one without pydicom.
    """
    out: dict[int, int] = {}
    off = 0
    while off + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHL", command, off)
        off += 8
        if off + length > len(command):
            break
        if group == 0 and length == 2:
            out[element] = struct.unpack_from("<H", command, off)[0]
        off += length
    return out


def command_field(msg: DIMSEMessage) -> int:
    return int(getattr(msg.command_set, "CommandField", -1))


class RequestCache:
    """A probe's DIMSE request PDUs, encoded once: for a given presentation context, peer PDU
    size and message id the bytes never change, and pydicom's encoder costs more CPU than the
    rest of a C-ECHO (bench/scale)."""

    def __init__(self, abstract_syntax: str, limit: int = 16) -> None:
        self.abstract_syntax = abstract_syntax
        self.limit = limit
        self._pdus: dict[tuple[int, str, int, int], list[bytes]] = {}

    def get(
        self, assoc: DicomAssociation, build: Callable[[int, str], DIMSEMessage]
    ) -> list[bytes]:
        """PDUs for the next request; `build(message_id, transfer_syntax)` makes the message."""
        cx = assoc.contexts[self.abstract_syntax]
        key = (cx.context_id, cx.transfer_syntax, assoc.peer_max_pdu, assoc.next_message_id())
        pdus = self._pdus.get(key)
        if pdus is None:
            if len(self._pdus) >= self.limit:
                self._pdus.clear()
            message = build(key[3], cx.transfer_syntax)
            pdus = self._pdus[key] = assoc.encode_dimse(message, self.abstract_syntax)
        return pdus
