"""DICOM upper-layer encodings the probes share: constants, our A-ASSOCIATE-RQ and the peer's
AC (encoded and decoded once, cached), and the command-set fields read straight from the bytes
(leniently here, to tell a pending response from the final one while reading; the strict
reading a probe acts on is probes/dicom_command.py).

pynetdicom is used as a codec only; probes/dicom_wire.py drives the exchange on our own socket.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext

from probes.base import ProbeError, Reason
from probes.dicom_command import DimseResponse

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
NO_DATA_SET = 0x0101
# SOP classes more than one probe names
VERIFICATION = "1.2.840.10008.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"

# Smallest maximum PDU length a peer may announce: one PDV item header (6 bytes) + 1 byte of data.
MIN_PEER_PDU = 7


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


# Bytes 10-41 of an A-ASSOCIATE-AC: the called and calling AE titles, "reserved" there.
_AC_AETS = slice(10, 42)
_BLANK_AETS = b" " * 32


def decode_associate_ac(data: bytes) -> tuple[A_ASSOCIATE_AC, A_ASSOCIATE]:
    """An A-ASSOCIATE-AC decoded with pynetdicom, cached on its bytes (read, never modified).

    A PACS answers a probe's (cached) request with the same bytes every run; decoding the answer
    to a C-GET's 31 contexts validated ~100 UIDs through pydicom, more CPU than the rest of the
    run (bench/imaging, BENCHMARKS.md). A decoding error is raised again, never cached.

    The AC echoes the request's AE titles in two reserved fields that PS3.8 (Table 9-17) says
    are not tested on receipt, and pynetdicom does not test them; nothing here reads them. They
    are blanked before the cache, so that every target a PACS answers alike shares one entry
    (keyed with them, each of thousands of targets missed the cache on every run).
    """
    if len(data) >= _AC_AETS.stop:
        data = data[: _AC_AETS.start] + _BLANK_AETS + data[_AC_AETS.stop :]
    return _decode_associate_ac(data)


@lru_cache(maxsize=64)
def _decode_associate_ac(data: bytes) -> tuple[A_ASSOCIATE_AC, A_ASSOCIATE]:
    ac = A_ASSOCIATE_AC()
    ac.decode(data)
    return ac, ac.to_primitive()


@dataclass
class AcceptedContext:
    context_id: int
    abstract_syntax: str
    transfer_syntax: str



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
COMPLETED, FAILED, WARNING = 0x1021, 0x1022, 0x1023  # sub-operation counts
C_STORE_RQ_FIELD, C_STORE_RSP_FIELD, C_FIND_RSP_FIELD = 0x0001, 0x8001, 0x8020
C_ECHO_RQ_FIELD, C_ECHO_RSP_FIELD = 0x0030, 0x8030


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


def dimse_status(msg: DIMSEMessage | DimseResponse) -> int:
    if isinstance(msg, DimseResponse):
        status = msg.status
    else:
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


def command_field(msg: DIMSEMessage | DimseResponse) -> int:
    if isinstance(msg, DimseResponse):
        return msg.command_field
    return int(getattr(msg.command_set, "CommandField", -1))


