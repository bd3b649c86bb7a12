"""A DICOM upper-layer client driven directly on a socket, timed at send/receive.

pynetdicom's Association runs a reactor thread that polls its socket and queues, which adds
milliseconds per association; a stopwatch around `ae.associate()` measures that machinery, not
the PACS. Here pynetdicom is only the codec for what we send and for association PDUs (with our
own encodings in probes/dicom_pdu.py); a DIMSE response is read from its bytes by
probes/dicom_command.py. This module drives the exchange itself, so that

* each phase is the time from the first byte we send to the last byte we receive: requests are
  encoded before the clock starts, and responses are decoded only after it stops (a C-FIND's
  pending responses are read as they arrive and decoded once the final one is in, so decoding
  them cannot delay reading the next one),
* the end of a phase is the kernel's receive timestamp of the last segment where the OS tells,
  TCP_QUICKACK is re-armed before every wait and every wait is bounded by the probe's deadline
  (probes.net.stream.TimedStream, which this builds on); `connect` is the kernel's SYN → SYN-ACK
  round trip (probes.net.connect),
* a declared PDU length is checked against what we negotiated before anything is allocated.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Hashable, Iterator
from io import BytesIO

from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dsutils import decode as decode_dataset
from pynetdicom.dsutils import encode as encode_dataset
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RJ, A_RELEASE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification

from probes.base import Deadline, Phases, ProbeError, Reason
from probes.dicom_command import DimseResponse, read_response
from probes.dicom_pdu import (
    APPLICATION_CONTEXT,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    MAX_CONTROL_PDU,
    MAX_DIMSE_MESSAGE,
    MAX_EXCHANGE_BYTES,
    MIN_PEER_PDU,
    NO_DATA_SET,
    PDU_ABORT,
    PDU_ASSOC_AC,
    PDU_ASSOC_RJ,
    PDU_DATA,
    PDU_RELEASE_RP,
    PDU_RELEASE_RQ,
    PENDING_STATUSES,
    AcceptedContext,
    CountedMessage,
    associate_rq_bytes,
    command_fields,
    command_uids,
    decode_associate_ac,
)
from probes.dicom_status import reject_failure
from probes.net.stream import TimedStream

# Fixed 10-byte PDUs, encoded once (pynetdicom builds a PDU object for each encode).
RELEASE_RQ = bytes(A_RELEASE_RQ().encode())
_abort = A_ABORT_RQ()
_abort.source, _abort.reason_diagnostic = 0, 0  # service user, no reason given
ABORT_RQ = bytes(_abort.encode())
del _abort


class DicomAssociation(TimedStream):
    """One association to a DICOM peer, driven synchronously on one socket.

    Every receive is bounded by `deadline`; every phase is recorded in `phases`.
    """

    SILENCE = {"association": "no A-ASSOCIATE answer"}

    def __init__(
        self,
        sock: socket.socket,
        deadline: Deadline,
        phases: Phases,
        *,
        max_pdu: int = 16384,
    ) -> None:
        super().__init__(sock, deadline)
        self.phases = phases
        self.max_pdu = max_pdu
        self.peer_max_pdu = 16384
        self.contexts: dict[str, AcceptedContext] = {}
        self._open = False
        self._message_id = 0

    # -- framing -----------------------------------------------------------------------------

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

    def decode_identifier(self, msg: DIMSEMessage | DimseResponse, abstract_syntax: str) -> Dataset:
        ts = self.contexts[abstract_syntax].transfer_syntax
        if isinstance(msg, DimseResponse):
            raw = msg.data_set
        else:
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
        self, message: DIMSEMessage | list[bytes], abstract_syntax: str
    ) -> Iterator[tuple[DimseResponse, float]]:
        """Send a request; yield each response with seconds from our first request byte to the
        last byte of that response, the final (non-pending) response last. `message` may be
        the request's PDUs from encode_dimse() (the probes encode each request once and reuse
        it: pydicom's encoder was ~15 % of the agent's CPU at 1,000 targets).

        All responses are read before any is read out: a pending C-FIND response's identifier
        is decoded (with pydicom) only once the final response is in, so that work is never
        counted as the peer's time. A response's command set is read from its bytes by
        probes.dicom_command (no pydicom: it was most of a C-ECHO's CPU). The `dimse` phase
        is request → final response.
        """
        pdus = message if isinstance(message, list) else self.encode_dimse(message, abstract_syntax)
        received: list[tuple[list[bytes], float]] = []
        total = 0
        t0 = self.send_pdus(pdus, "DIMSE request")
        while True:
            units, status = self.recv_message_raw()
            received.append((units, self.received_at - t0))
            total += sum(len(u) for u in units)
            if total > MAX_EXCHANGE_BYTES:
                raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE responses larger than allowed")
            if status not in PENDING_STATUSES:
                break
        for units, elapsed in received:
            yield read_response(units), elapsed

    # -- release -------------------------------------------------------------------------------

    def release(self) -> None:
        """A-RELEASE-RQ → RP (phase `release`)."""
        if not self._open:
            return
        t0 = self._send(RELEASE_RQ, "release")
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

    # -- sub-operations (C-GET's C-STORE-RQs on this association; a storage SCP's) ------------

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
        """Best effort A-ABORT, never waiting: 10 bytes the socket's send buffer takes, or not."""
        if not self._open:
            return
        self._open = False
        try:
            self.sock.send(ABORT_RQ)
        except (OSError, ValueError):
            pass


# Request PDUs that depend only on what every probe of a kind sends (a C-ECHO, a C-FIND of
# the same query): one copy for the process rather than one per target (~1.3 KB a target at
# 5,000 targets, bench/scale/memory.py). Bounded; refilled after a clear. Sized like
# dicom_pdu.associate_rq_bytes' cache: 5,000 targets each with a query of its own (a canary
# patient per site) still fit, so their C-FINDs are not encoded again on every run.
_SHARED: dict[tuple[Hashable, ...], list[bytes]] = {}
SHARED_LIMIT = 16384


class RequestCache:
    """A probe's DIMSE request PDUs, encoded once: for a given presentation context, peer PDU
    size and message id the bytes never change, and pydicom's encoder costs more CPU than the
    rest of a C-ECHO (bench/scale).

    `shared`: what the request depends on besides those (() for a C-ECHO, the query for a
    C-FIND). With it, probes of different targets that send the same request share one copy;
    the PDUs handed out must then be read, never changed."""

    def __init__(
        self, abstract_syntax: str, limit: int = 16, *, shared: Hashable | None = None
    ) -> None:
        self.abstract_syntax = abstract_syntax
        self._shared = shared
        self.limit = limit if shared is None else SHARED_LIMIT
        self._pdus: dict[tuple[Hashable, ...], list[bytes]] = {} if shared is None else _SHARED

    def get(
        self, assoc: DicomAssociation, build: Callable[[int, str], DIMSEMessage]
    ) -> list[bytes]:
        """PDUs for the next request; `build(message_id, transfer_syntax)` makes the message."""
        cx = assoc.contexts[self.abstract_syntax]
        message_id = assoc.next_message_id()
        key: tuple[Hashable, ...] = (
            cx.context_id, cx.transfer_syntax, assoc.peer_max_pdu, message_id
        )
        if self._shared is not None:
            key = (self.abstract_syntax, self._shared, *key)
        pdus = self._pdus.get(key)
        if pdus is None:
            if len(self._pdus) >= self.limit:
                self._pdus.clear()
            message = build(message_id, cx.transfer_syntax)
            pdus = self._pdus[key] = assoc.encode_dimse(message, self.abstract_syntax)
        return pdus
