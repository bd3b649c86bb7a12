"""A DIMSE response read straight from its P-DATA-TF bytes: the command set's few fields and the
data set's bytes, without pydicom.

A command set is always implicit VR little endian, group 0000 (PS3.7 6.3.1, Annex E), and a
probe needs three of its elements: CommandField, CommandDataSetType and Status, each an
unsigned short. Decoding it through pynetdicom and pydicom (a Dataset, its element objects,
value conversion) was the largest CPU cost of a C-ECHO run (bench/scale/per_run); reading the
three values with struct costs a few microseconds.

The reader is stricter than pydicom: an element whose value runs past the end, bytes left over
that cannot hold an element header, or one of the three fields with a length other than 2 (0
for Status counts as absent, as pydicom has it) make the response malformed: invalid_response.
pydicom read a 4-byte Status as a list and a 3-byte one as an exception when the probe asked for
it, which surfaced as the probe's `error`. A data set is never decoded here; its bytes are kept
for a probe that must look inside (a C-FIND canary's identifiers), and only then decoded.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from probes.base import ProbeError, Reason

COMMAND_FIELD, COMMAND_DATA_SET_TYPE, STATUS = 0x0100, 0x0800, 0x0900
NO_DATA_SET = 0x0101
_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")


class CommandSet(NamedTuple):
    field: int  # CommandField (0000,0100)
    has_data_set: bool  # CommandDataSetType (0000,0800) other than 0x0101
    status: int | None  # Status (0000,0900); None when absent or empty


class DimseResponse(NamedTuple):
    """One DIMSE message as the probes use it: its command and its data set's raw bytes."""

    command: CommandSet
    data_set: bytes

    @property
    def command_field(self) -> int:
        return self.command.field

    @property
    def status(self) -> int | None:
        return self.command.status


def _malformed(what: str) -> ProbeError:
    return ProbeError(Reason.INVALID_RESPONSE, f"DIMSE: malformed command set ({what})")


def read_command(command: bytes) -> CommandSet:
    """The fields a probe needs from an encoded command set; ProbeError(invalid_response) when
    the bytes do not tile into elements or a needed field is missing or not 2 bytes long.
    Later duplicates win, as in pydicom's decode."""
    found: dict[int, bytes] = {}
    off, end = 0, len(command)
    while off < end:
        if off + 8 > end:
            raise _malformed("trailing bytes")
        group, element, length = _ELEMENT.unpack_from(command, off)
        off += 8
        if length > end - off:
            raise _malformed("element longer than the command set")
        if group == 0 and element in (COMMAND_FIELD, COMMAND_DATA_SET_TYPE, STATUS):
            found[element] = command[off : off + length]
        off += length
    field = found.get(COMMAND_FIELD)
    kind = found.get(COMMAND_DATA_SET_TYPE)
    status = found.get(STATUS, b"")
    if field is None or len(field) != 2:
        raise _malformed("CommandField")
    if kind is None or len(kind) != 2:
        raise _malformed("CommandDataSetType")
    if len(status) not in (0, 2):
        raise _malformed("Status")
    return CommandSet(
        _US.unpack(field)[0],
        _US.unpack(kind)[0] != NO_DATA_SET,
        _US.unpack(status)[0] if status else None,
    )


def read_response(units: list[bytes]) -> DimseResponse:
    """One DIMSE message from its P-DATA-TF PDUs (framing already checked by the reader).

    Fragments are taken in order as pynetdicom's decoder takes them: the message is complete
    at its last command fragment when the command announces no data set, else at the last
    data-set fragment; anything after that point is ignored. An incomplete message is
    invalid_response.
    """
    command = bytearray()
    data = bytearray()
    cmd: CommandSet | None = None
    for pdu in units:
        off, end = 6, len(pdu)
        while off + 6 <= end:
            item_len = struct.unpack_from(">L", pdu, off)[0]
            control = pdu[off + 5]
            fragment = pdu[off + 6 : off + 4 + item_len]
            off += 4 + item_len
            if control & 0x01:
                command += fragment
                if control & 0x02:
                    cmd = read_command(bytes(command))
                    if not cmd.has_data_set:
                        return DimseResponse(cmd, b"")
            elif cmd is not None:
                data += fragment
                if control & 0x02:
                    return DimseResponse(cmd, bytes(data))
            else:
                raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE: data set before a command")
    raise ProbeError(Reason.INVALID_RESPONSE, "DIMSE: incomplete message")


# Explicit VR little endian: these VRs have 2 reserved bytes and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN",
     b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
_TAG_LEN = struct.Struct("<HHL")
_EXPLICIT = struct.Struct("<HH2sH")


def read_keys(data: bytes, implicit: bool, tags: frozenset[int]) -> dict[int, bytes] | None:
    """The raw values of top-level elements `tags` of an encoded data set, or None when it is not
    a plain run of defined-length elements (a sequence of undefined length, an unknown VR, bytes
    left over): the caller then decodes it with pydicom, as before.

    A C-FIND identifier is patient data; a canary's check needs three or four of its values,
    and building a pydicom Dataset for each match cost ~85 µs. Later duplicates win, as in
    pydicom's decode.
    """
    out: dict[int, bytes] = {}
    off, end = 0, len(data)
    while off < end:
        if off + 8 > end:
            return None
        if implicit:
            group, elem, length = _TAG_LEN.unpack_from(data, off)
            off += 8
        else:
            group, elem, vr, length = _EXPLICIT.unpack_from(data, off)
            off += 8
            if vr in _LONG_VRS:
                if off + 4 > end:
                    return None
                length = struct.unpack_from("<L", data, off)[0]
                off += 4
            elif vr not in _SHORT_VRS:
                return None
        if length == 0xFFFFFFFF or length > end - off or group == 0xFFFE:
            return None
        tag = group << 16 | elem
        if tag in tags:
            out[tag] = data[off : off + length]
        off += length
    return out
