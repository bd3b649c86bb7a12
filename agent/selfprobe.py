"""Self-probe: the agent C-ECHOes its own in-process loopback SCP and reports what it measured.

That SCP answers from a blocking socket with no polling, so the wire time is a few tens of
microseconds; whatever the agent reports beyond that is its own overhead (CPU starvation, GC,
a saturated pool), exported as pacs_agent_self_probe_overhead_seconds.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable

from pynetdicom.dimse_messages import C_ECHO_RQ, C_ECHO_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ, A_RELEASE_RP, P_DATA_TF
from pynetdicom.pdu_primitives import MaximumLengthNotification
from pynetdicom.presentation import PresentationContext

from probes.base import Deadline, Phases
from probes.dicom_echo import VERIFICATION, DicomEchoProbe
from probes.dicom_pdu import IMPLICIT_VR_LE
from probes.specs import DicomEndpoint

log = logging.getLogger("agent.selfprobe")


def _read_pdu(conn: socket.socket) -> tuple[int, bytes]:
    head = b""
    while len(head) < 6:
        chunk = conn.recv(6 - len(head))
        if not chunk:
            raise ConnectionError("closed")
        head += chunk
    pdu_type, _, length = struct.unpack(">BBL", head)
    if length > 1 << 20:
        raise ConnectionError("oversized PDU")
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return pdu_type, head + body


def association_accept(
    rq_bytes: bytes, accept: Callable[[str], bool] = lambda _: True, max_pdu: int = 16384
) -> bytes:
    """The A-ASSOCIATE-AC answering an A-ASSOCIATE-RQ: every context whose abstract syntax
    `accept`s, in Implicit VR Little Endian when offered (else the first syntax offered).
    Shared by the in-process SCPs (self-probe, bench simulator, timing tests)."""
    rq = A_ASSOCIATE_RQ()
    rq.decode(rq_bytes)
    prim = rq.to_primitive()
    prim.result = 0x00
    results = []
    for cx in prim.presentation_context_definition_list:
        r = PresentationContext()
        r.context_id = cx.context_id
        offered = [str(ts) for ts in cx.transfer_syntax]
        r.result = 0x00 if accept(str(cx.abstract_syntax)) and offered else 0x03
        r.transfer_syntax = [IMPLICIT_VR_LE if IMPLICIT_VR_LE in offered else offered[0]]
        results.append(r)
    prim.presentation_context_definition_results_list = results
    ml = MaximumLengthNotification()
    ml.maximum_length_received = max_pdu
    prim.user_information = [ml]
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(prim)
    return ac.encode()


class LoopbackEchoSCP:
    """A minimal Verification SCP on 127.0.0.1, one thread per connection, no polling."""

    def __init__(self, ae_title: str = "SELFPROBE") -> None:
        self.ae_title = ae_title
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._cache: dict[bytes, bytes] = {}
        self._thread = threading.Thread(target=self._accept, name="selfprobe-scp", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(5)
            # Served here, not in a new thread: self-probes come one at a time, and starting a
            # thread inside the timed association costs GIL hand-overs in a busy agent
            # (bench/scale: ~1-3 ms of the loaded overhead).
            self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        # Answers are cached by request bytes: the probe sends the same bytes every time, and
        # re-running pydicom's codec here would add a millisecond of "server time" to the figure.
        try:
            with conn:
                _, data = _read_pdu(conn)
                cached = self._cache.get(data)
                if cached is None:
                    cached = self._cache[data] = self._accept_bytes(data)
                conn.sendall(cached)
                while True:
                    pdu_type, data = _read_pdu(conn)
                    if pdu_type == 0x04:
                        out = self._cache.get(data)
                        if out is None:
                            out = self._cache[data] = self._echo_bytes(data)
                        conn.sendall(out)
                    elif pdu_type == 0x05:
                        conn.sendall(A_RELEASE_RP().encode())
                        return
                    else:
                        return
        except (OSError, ConnectionError, AssertionError, ValueError):
            return

    def _accept_bytes(self, data: bytes) -> bytes:
        if len(self._cache) > 64:
            self._cache.clear()
        return association_accept(data, lambda syntax: syntax == VERIFICATION)

    @staticmethod
    def _echo_bytes(data: bytes) -> bytes:
        # A one-PDU C-ECHO-RQ (that is all the self-probe sends)
        msg = DIMSEMessage()
        pdu = P_DATA_TF()
        pdu.decode(data)
        if not msg.decode_msg(pdu.to_primitive()) or not isinstance(msg, C_ECHO_RQ):
            raise ValueError("not a C-ECHO-RQ")
        rsp = C_ECHO()
        rsp.MessageIDBeingRespondedTo = msg.command_set.MessageID
        rsp.AffectedSOPClassUID = VERIFICATION
        rsp.Status = 0x0000
        out = C_ECHO_RSP()
        out.primitive_to_message(rsp)
        cx_id = pdu.presentation_data_value_items[0].presentation_context_id
        if cx_id is None:
            raise ValueError("P-DATA item without a presentation context")
        return b"".join(P_DATA_TF(p).encode() for p in out.encode_msg(cx_id, 16384))

    def close(self) -> None:
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass


class SelfProbe:
    def __init__(self) -> None:
        self.scp = LoopbackEchoSCP()
        endpoint = DicomEndpoint("127.0.0.1", self.scp.port, "SELFPROBE", "SELFPROBE")
        self.probe = DicomEchoProbe(endpoint)

    def measure(self, timeout: float = 5.0) -> float | None:
        """Seconds the agent reports for an echo that costs the wire ~nothing; None on failure."""
        phases = Phases()
        try:
            self.probe.run(Deadline(timeout), phases)
        except Exception as e:  # noqa: BLE001
            log.warning("self-probe failed: %s", type(e).__name__)
            return None
        return phases.total()

    def close(self) -> None:
        self.scp.close()


__all__ = ["SelfProbe", "LoopbackEchoSCP", "association_accept"]
