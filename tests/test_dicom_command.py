"""The DIMSE response reader (probes/dicom_command.py) against pynetdicom/pydicom's decoder, and
against peers whose command sets are bent: a bad command set is invalid_response, never `error`.
A C-FIND identifier's keys read from the bytes agree with pydicom's reading.
"""

from __future__ import annotations

import socket
import struct
from io import BytesIO

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode as decode_dataset
from pynetdicom.dsutils import encode as encode_dataset

from agent.runner import run_probe
from probes.base import ProbeError, Reason
from probes.dicom_command import CommandSet, read_command, read_keys, read_response
from probes.dicom_find import raw_text
from probes.dicom_wire import DicomAssociation
from tests.helpers import hostile_peers as hp
from tests.helpers.config import plan, target

# the identifiers this file generates hold values pydicom warns about when they are set
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")

PROPERTY = settings(max_examples=400, deadline=None, derandomize=True, database=None)

THREE = (0x0100, 0x0800, 0x0900)


def element(group: int, elem: int, value: bytes) -> bytes:
    return struct.pack("<HHL", group, elem, len(value)) + value


us = st.integers(0, 0xFFFF).map(lambda v: struct.pack("<H", v))
other_elements = st.lists(
    st.tuples(
        st.integers(0, 0xFFFF).filter(lambda e: e not in THREE),
        st.binary(max_size=70).map(lambda b: b + b"\x00" * (len(b) % 2)),
    ),
    max_size=6,
)


@st.composite
def command_sets(draw: st.DrawFn) -> bytes:
    """A well-formed command set: CommandField, CommandDataSetType, Status (2 bytes, empty or
    absent) and other group-0000 elements, in any order, the three sometimes repeated."""
    parts = [element(0, 0x0100, draw(us)), element(0, 0x0800, draw(us))]
    status = draw(st.sampled_from(["us", "empty", "absent"]))
    if status != "absent":
        parts.append(element(0, 0x0900, draw(us) if status == "us" else b""))
    if draw(st.booleans()):
        parts.append(element(0, draw(st.sampled_from(THREE)), draw(us)))  # a later duplicate
    parts += [element(0, e, v) for e, v in draw(other_elements)]
    return b"".join(draw(st.permutations(parts)))


def pydicom_reading(raw: bytes) -> CommandSet:
    """What the probes read before, through pynetdicom's decoder and pydicom's values."""
    ds = decode_dataset(BytesIO(raw), True, True)
    status = getattr(ds, "Status", None)  # as dimse_status() read it
    return CommandSet(
        int(ds.CommandField),
        int(ds.CommandDataSetType) != 0x0101,
        None if status is None else int(status),
    )


@PROPERTY
@given(raw=command_sets())
def test_reader_agrees_with_pydicom_on_well_formed_command_sets(raw: bytes) -> None:
    assert read_command(raw) == pydicom_reading(raw)


def _bent(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(command_sets()))
    how = draw(st.sampled_from(["cut", "flip", "append", "length"]))
    if how == "cut" and raw:
        del raw[draw(st.integers(0, len(raw) - 1)) :]
    elif how == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw[i] ^= draw(st.integers(1, 255))
    elif how == "append":
        raw += draw(st.binary(min_size=1, max_size=12))
    elif raw:
        at = draw(st.sampled_from([i for i in range(0, len(raw) - 7, 2)] or [0]))
        raw[at + 4 : at + 8] = struct.pack("<L", draw(st.integers(0, 0xFFFFFFFF)))
    return bytes(raw)


garbage = st.one_of(st.binary(max_size=200), st.composite(_bent)())


@PROPERTY
@given(raw=garbage)
@example(raw=element(0, 0x0100, b"\x30\x80") + element(0, 0x0800, b"\x01\x01")
         + element(0, 0x0900, b"\x00\x00\x01\x00"))
@example(raw=element(0, 0x0100, b"\x30\x80") + element(0, 0x0800, b"\x01\x01")
         + element(0, 0x0900, b"\x00\x00\x01"))
def test_reader_on_garbage_returns_a_reading_or_invalid_response(raw: bytes) -> None:
    try:
        got = read_command(raw)
    except ProbeError as e:
        assert e.reason == Reason.INVALID_RESPONSE
        return
    # whatever it accepts tiles into elements and has the fields as 2-byte values
    assert 0 <= got.field <= 0xFFFF
    assert got.status is None or 0 <= got.status <= 0xFFFF


def test_malformed_fields_are_invalid_response() -> None:
    head = element(0, 0x0100, b"\x30\x80") + element(0, 0x0800, b"\x01\x01")
    bad = [
        head + element(0, 0x0900, b"\x00\x00\x01\x00"),  # 4-byte Status: pydicom gave a list
        head + element(0, 0x0900, b"\x01"),  # odd: pydicom raised when it was read
        element(0, 0x0800, b"\x01\x01") + element(0, 0x0900, b"\x00\x00"),  # no CommandField
        element(0, 0x0100, b"\x30\x80") + element(0, 0x0900, b"\x00\x00"),  # no data-set type
        head + struct.pack("<HHL", 0, 0x0900, 4) + b"\x00\x00",  # value runs past the end
        head + element(0, 0x0900, b"\x00\x00") + b"\x00\x00\x00",  # a partial header left
    ]
    for raw in bad:
        with pytest.raises(ProbeError) as e:
            read_command(raw)
        assert e.value.reason == Reason.INVALID_RESPONSE
    assert read_command(head + element(0, 0x0900, b"")).status is None
    assert read_command(head + element(0, 0x0900, b"\x10\x01")) == CommandSet(0x8030, False, 0x0110)


def _pdus(command: bytes, data: bytes, splits: list[int], per_pdu: int) -> list[bytes]:
    """The message cut into PDV fragments at `splits`, `per_pdu` PDVs to a P-DATA-TF."""
    pdvs: list[bytes] = []
    for payload, kind in ((command, 1), (data, 0)):
        if kind == 0 and not data:
            break
        cuts = sorted({0, len(payload), *(s % (len(payload) + 1) for s in splits)})
        pieces = [payload[a:b] for a, b in zip(cuts, cuts[1:], strict=False)] or [b""]
        for i, piece in enumerate(pieces):
            control = kind | (2 if i == len(pieces) - 1 else 0)
            pdvs.append(struct.pack(">LBB", len(piece) + 2, 1, control) + piece)
    out = []
    for i in range(0, len(pdvs), per_pdu):
        body = b"".join(pdvs[i : i + per_pdu])
        out.append(struct.pack(">BBL", 4, 0, len(body)) + body)
    return out


@PROPERTY
@given(
    field=st.sampled_from([0x8020, 0x8030, 0x8001]),
    status=st.sampled_from([0x0000, 0xFF00, 0xFF01, 0xA700, 0xC000]),
    data=st.binary(max_size=300),
    splits=st.lists(st.integers(0, 400), max_size=5),
    per_pdu=st.integers(1, 4),
)
def test_fragmented_response_reads_as_pynetdicom_decodes_it(
    field: int, status: int, data: bytes, splits: list[int], per_pdu: int
) -> None:
    command = (
        element(0, 0x0002, b"1.2.840.10008.1.1\x00")
        + element(0, 0x0100, struct.pack("<H", field))
        + element(0, 0x0120, b"\x01\x00")
        + element(0, 0x0800, struct.pack("<H", 0x0001 if data else 0x0101))
        + element(0, 0x0900, struct.pack("<H", status))
    )
    units = _pdus(command, data, splits, per_pdu)
    got = read_response(units)
    old = DicomAssociation.decode_message(units)
    assert got.command_field == int(old.command_set.CommandField) == field
    assert got.status == int(old.command_set.Status) == status
    assert got.data_set == (old.data_set.getvalue() if old.data_set is not None else b"") == data


def test_data_set_announced_but_missing_is_invalid_response() -> None:
    command = element(0, 0x0100, b"\x20\x80") + element(0, 0x0800, b"\x01\x00")
    with pytest.raises(ProbeError) as e:
        read_response(_pdus(command, b"", [], 1))
    assert e.value.reason == Reason.INVALID_RESPONSE


# -- end to end: a peer answering C-ECHO with a bent Status ----------------------------------


def _echo_with_status_bytes(conn: socket.socket, server: hp.ScriptServer) -> None:
    """Associate, answer the C-ECHO with server.state["status"] as the Status value's bytes."""
    got = hp._associate(conn, server)  # noqa: SLF001
    if got is None:
        return
    command = (
        element(0, 0x0002, b"1.2.840.10008.1.1\x00")
        + element(0, 0x0100, b"\x30\x80")
        + element(0, 0x0120, b"\x01\x00")
        + element(0, 0x0800, b"\x01\x01")
        + element(0, 0x0900, server.state["status"])
    )
    conn.sendall(hp.p_data(hp.pdata_context_id(got[1]), command))
    rel = hp.read_pdu(conn, server)
    if rel is not None and rel[0] == 0x05:
        conn.sendall(hp.RELEASE_RP)
    hp.finish(conn, server)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (b"\x00\x00", None),
        (b"\x10\x01", Reason.DIMSE_STATUS),
        (b"", Reason.INVALID_RESPONSE),
        (b"\x00\x00\x00\x00", Reason.INVALID_RESPONSE),
        (b"\x00\x00\x00", Reason.INVALID_RESPONSE),
        (b"\x00", Reason.INVALID_RESPONSE),
    ],
)
def test_echo_status_bytes_from_a_peer(status: bytes, reason: Reason | None) -> None:
    with hp.ScriptServer(_echo_with_status_bytes) as server:
        server.state = {"status": status}
        p = plan(target(port=server.port, only=("dicom_echo",), timeout_ms=2000))
        r = run_probe(p, "dicom_echo")
        assert server.errors == []
    assert r.reason == reason, (r.reason, r.message)
    assert r.ok == (reason is None)
    assert "internal error" not in r.message


# -- a C-FIND identifier's keys, read from the bytes (read_keys) against pydicom -------------

KEYWORDS = ("PatientID", "StudyInstanceUID", "AccessionNumber", "StudyDate")
TAGS = {"PatientID": 0x00100020, "StudyInstanceUID": 0x0020000D,
        "AccessionNumber": 0x00080050, "StudyDate": 0x00080020}
text = st.text(alphabet="ABCXYZ0123456789.^- ", max_size=20)


def pydicom_keys(raw: bytes, implicit: bool) -> dict[str, str]:
    ds = decode_dataset(BytesIO(raw), implicit, True)
    return {k: raw_text(ds, k) for k in KEYWORDS}


def keys_from_bytes(values: dict[int, bytes]) -> dict[str, str]:
    return {k: values.get(TAGS[k], b"").decode("latin-1").strip(" \x00") for k in KEYWORDS}


@st.composite
def identifiers(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A study-level identifier as a PACS might return it, in either little-endian syntax."""
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for k in draw(st.lists(st.sampled_from(KEYWORDS), unique=True)):
        setattr(ds, k, draw(text))
    if draw(st.booleans()):
        ds.PatientName = draw(text)
        ds.ModalitiesInStudy = ["CT", "MR"]
        ds.NumberOfStudyRelatedInstances = draw(st.integers(0, 9999))
    if draw(st.booleans()):
        item = Dataset()
        item.ReferencedSOPInstanceUID = "1.2.3"
        ds.ReferencedStudySequence = [item]
    implicit = draw(st.booleans())
    raw = encode_dataset(ds, implicit, True)
    assert raw is not None
    return bytes(raw), implicit


# generated values may be longer than their VR allows: the reader must agree with pydicom
# on them too, and pydicom's warning about it is expected
@pytest.mark.filterwarnings("ignore:The value length:UserWarning")
@PROPERTY
@given(ident=identifiers())
def test_identifier_keys_read_from_bytes_agree_with_pydicom(ident: tuple[bytes, bool]) -> None:
    raw, implicit = ident
    values = read_keys(raw, implicit, frozenset(TAGS.values()))
    if b"\xff\xff\xff\xff" not in raw:  # defined lengths throughout: read without pydicom
        assert values is not None
    if values is not None:
        assert keys_from_bytes(values) == pydicom_keys(raw, implicit)


# generated values may be longer than their VR allows: the reader must agree with pydicom
# on them too, and pydicom's warning about it is expected
@pytest.mark.filterwarnings("ignore:The value length:UserWarning")
@PROPERTY
@given(data=st.data(), implicit=st.booleans())
def test_identifier_reader_on_garbage_never_raises_and_agrees(
    data: st.DataObject, implicit: bool
) -> None:
    raw = data.draw(st.one_of(st.binary(max_size=200), identifiers().map(lambda i: i[0])))
    if raw and data.draw(st.booleans()):
        cut = bytearray(raw)
        cut[data.draw(st.integers(0, len(cut) - 1))] ^= data.draw(st.integers(1, 255))
        raw = bytes(cut)
    values = read_keys(raw, implicit, frozenset(TAGS.values()))
    if values is not None:  # what it accepts, pydicom reads alike (and does not fail on)
        assert keys_from_bytes(values) == pydicom_keys(raw, implicit)
