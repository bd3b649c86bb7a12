"""dicom_retrieve against real peers on loopback: DCMTK's dcmqrscp serving a generated study over
C-GET and C-MOVE (the move destination is the agent's own storage SCP), pynetdicom's C-GET SCP
as a second implementation, and hostile peers that never finish."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.dsutils import encode as encode_dataset
from pynetdicom.sop_class import (
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from agent.config import ConfigError
from agent.runner import run_probe
from probes.base import NON_ADDITIVE_PHASES, Deadline, Reason
from probes.dicom_retrieve import STUDY_ROOT_GET
from probes.storage_scp import receiving
from tests.helpers import LOOPBACK, bind_retry, free_port
from tests.helpers.config import plan, plans, target
from tests.helpers.dcmtk import QRServer, write_study
from tests.helpers.hostile_peers import (
    A_ABORT,
    ScriptServer,
    _associate,
    finish,
    p_data,
    pdata_context_id,
)
from tests.helpers.tls import TLSMaterial

AGENT = str(Path(sys.executable).with_name("agent"))
COUNT = 5
MOVE_AE = "AGENT_STORE"
PHASES = {"connect", "associate", "first_image", "last_image", "release"}


def retrieve_target(port: int, timeout_ms: int = 5000, **cfg: Any) -> dict[str, Any]:
    return target(
        port=port,
        called_aet="QRSCP",
        timeout_ms=timeout_ms,
        only=("dicom_retrieve",),
        probes={"dicom_retrieve": cfg},
    )


def run_retrieve(port: int, timeout_ms: int = 5000, **cfg: Any):
    return run_probe(plan(retrieve_target(port, timeout_ms, **cfg)), "dicom_retrieve")


def wire_bytes(files: list[Path]) -> int:
    """What the PACS sends per instance: the data set without its file meta, as stored."""
    total = 0
    for f in files:
        ds = dcmread(f)
        raw = encode_dataset(ds, False, True)  # stored explicit VR little endian
        assert raw is not None
        total += len(raw)
    return total


@pytest.fixture
def qr(tmp_path: Path) -> Iterator[QRServer]:
    """dcmqrscp with a COUNT-instance study; MOVE_AE resolves to a port kept for our SCP."""
    server = QRServer(
        tmp_path / "qr", generate_uid(), COUNT, move_destinations={MOVE_AE: free_port()}
    )
    server.start()
    try:
        yield server
    finally:
        assert server.stop() is not None


def _check_success(r: Any, n: int, total_bytes: int | None = None) -> None:
    assert r.ok, r.message
    assert r.reason is None
    assert r.facts.instances == n
    if total_bytes is not None:
        assert r.facts.size_bytes == total_bytes
    assert PHASES <= set(r.phases), r.phases
    assert 0 < r.phases["first_image"] <= r.phases["last_image"]
    # first_image overlaps last_image: it is not summed into the run's duration
    assert "first_image" in NON_ADDITIVE_PHASES
    assert r.duration == pytest.approx(
        sum(v for k, v in r.phases.items() if k not in NON_ADDITIVE_PHASES)
    )


# -- DCMTK dcmqrscp ------------------------------------------------------------------------------


def test_cget_from_dcmqrscp_counts_every_instance_and_byte(qr: QRServer) -> None:
    files = sorted((qr.workdir / "storage").glob("img*.dcm"))
    r = run_retrieve(qr.port, studyInstanceUID=qr.study_uid)
    _check_success(r, COUNT, wire_bytes(files))
    assert r.message == f"C-GET successful: {COUNT} instances"


def test_cmove_from_dcmqrscp_arrives_at_the_agents_storage_scp(qr: QRServer) -> None:
    port = qr.move_destinations[MOVE_AE]
    files = sorted((qr.workdir / "storage").glob("img*.dcm"))
    r = run_retrieve(
        qr.port,
        studyInstanceUID=qr.study_uid,
        method="move",
        moveDestination=MOVE_AE,
        storeListen=f"{LOOPBACK}:{port}",
    )
    _check_success(r, COUNT, wire_bytes(files))
    assert r.message == f"C-MOVE successful: {COUNT} instances"
    # the storage SCP listens only while a run needs it
    with socket.socket() as s:
        assert s.connect_ex((LOOPBACK, port)) != 0


def test_cmove_twice_in_a_row_reuses_the_listen_port(qr: QRServer) -> None:
    port = qr.move_destinations[MOVE_AE]
    cfg = {
        "studyInstanceUID": qr.study_uid,
        "method": "move",
        "moveDestination": MOVE_AE,
        "storeListen": f"{LOOPBACK}:{port}",
    }
    p = plan(retrieve_target(qr.port, **cfg))
    for _ in range(2):
        r = run_probe(p, "dicom_retrieve")
        assert r.ok, r.message
        assert r.facts.instances == COUNT


def test_move_destination_unknown_is_dimse_status_a801(qr: QRServer) -> None:
    r = run_retrieve(
        qr.port,
        studyInstanceUID=qr.study_uid,
        method="move",
        moveDestination="NOT_KNOWN",
        storeListen=f"{LOOPBACK}:{free_port()}",
    )
    assert not r.ok
    assert r.reason == Reason.DIMSE_STATUS
    assert "0xA801" in r.message and "Move destination unknown" in r.message, r.message
    assert "first_image" not in r.phases


def test_expected_instances_mismatch_is_unexpected_result(qr: QRServer) -> None:
    r = run_retrieve(qr.port, studyInstanceUID=qr.study_uid, expectedInstances=COUNT + 1)
    assert not r.ok
    assert r.reason == Reason.UNEXPECTED_RESULT
    assert r.message == f"{COUNT} instances, expected {COUNT + 1}"
    ok = run_retrieve(qr.port, studyInstanceUID=qr.study_uid, expectedInstances=COUNT)
    assert ok.ok, ok.message


def test_unknown_study_fails(qr: QRServer) -> None:
    r = run_retrieve(qr.port, studyInstanceUID=generate_uid())
    assert not r.ok
    assert r.reason in (Reason.UNEXPECTED_RESULT, Reason.DIMSE_STATUS), r.message


def test_cli_probe_once_passes_and_prints_no_patient_data(qr: QRServer, tmp_path: Path) -> None:
    cfg = tmp_path / "retrieve.json"
    cfg.write_text(json.dumps(retrieve_target(qr.port, studyInstanceUID=qr.study_uid)))
    proc = subprocess.run(
        [
            AGENT,
            "probe",
            "--once",
            "--probe",
            "dicom_retrieve",
            "--config",
            str(cfg),
            "--output",
            "json",
            "-v",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    checks = doc["targets"][0]["checks"]
    assert [c["name"] for c in checks] == ["dicom_retrieve"], checks
    assert checks[0]["reason"] is None and "last_image" in checks[0]["phases"], checks
    for out in (proc.stdout, proc.stderr):
        assert "SYNTHETIC" not in out and "SYNTH-RETRIEVE" not in out and "ACCRET01" not in out


# -- pynetdicom's C-GET SCP: a second implementation ---------------------------------------------


class PynetdicomGetSCP:
    """A pynetdicom Study Root C-GET SCP sending `datasets` (and optionally one it cannot)."""

    def __init__(
        self, datasets: list[Dataset], *, unsendable: int = 0, ssl_context: Any = None
    ) -> None:
        self.datasets = datasets
        self.unsendable = unsendable
        self.ssl_context = ssl_context
        self.server: Any = None
        self.port = 0

    def _on_get(self, event: Any) -> Iterator[Any]:
        extra = []
        for _ in range(self.unsendable):
            ds = Dataset()
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66"  # Raw Data: not proposed by the probe
            ds.SOPInstanceUID = generate_uid()
            extra.append(ds)
        items = self.datasets + extra
        yield len(items)
        for ds in items:
            yield 0xFF00, ds

    def __enter__(self) -> PynetdicomGetSCP:
        ae = AE(ae_title="QRSCP")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, scp_role=True, scu_role=True)
        ae.add_supported_context("1.2.840.10008.5.1.4.1.1.66", scp_role=True, scu_role=True)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 10
        self.server = bind_retry(
            lambda: ae.start_server(
                (LOOPBACK, 0),
                block=False,
                evt_handlers=[(evt.EVT_C_GET, self._on_get)],
                ssl_context=self.ssl_context,
            )
        )
        self.port = int(self.server.server_address[1])
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def _datasets(tmp_path: Path, n: int) -> list[Dataset]:
    return [dcmread(f) for f in write_study(tmp_path / "pyn", n, generate_uid())]


def test_cget_from_pynetdicom_scp(tmp_path: Path) -> None:
    with PynetdicomGetSCP(_datasets(tmp_path, 3)) as scp:
        r = run_retrieve(scp.port, studyInstanceUID=generate_uid(), expectedInstances=3)
    assert r.ok, r.message
    assert r.facts.instances == 3 and r.facts.size_bytes > 3 * 64 * 64


def test_cget_over_tls(tmp_path: Path, tls_material: TLSMaterial) -> None:
    # TLS sockets have no recvmsg: the images are then timed when recv() returns
    ctx = tls_material.good().server_context()
    with PynetdicomGetSCP(_datasets(tmp_path, 2), ssl_context=ctx) as scp:
        t = retrieve_target(scp.port, studyInstanceUID=generate_uid(), expectedInstances=2)
        t["config"].update(enableTLS=True, tls={"caFile": str(tls_material.ca_file)})
        r = run_probe(plan(t), "dicom_retrieve")
    assert r.ok, r.message
    assert r.tls is not None and {"tls", "first_image", "last_image"} <= set(r.phases)


def test_failed_sub_operation_is_dimse_status(tmp_path: Path) -> None:
    # one instance of a class the probe did not offer to take: the PACS cannot send it
    with PynetdicomGetSCP(_datasets(tmp_path, 2), unsendable=1) as scp:
        r = run_retrieve(scp.port, studyInstanceUID=generate_uid())
    assert not r.ok
    assert r.reason == Reason.DIMSE_STATUS
    assert "0xB000" in r.message and "1 of 3 sub-operations failed" in r.message, r.message


def test_storage_scp_answers_a_pynetdicom_scu(tmp_path: Path) -> None:
    """The C-MOVE side on its own, against a second implementation: pynetdicom as the PACS's
    storage SCU, C-ECHO (some PACS verify a destination first) and then C-STORE."""
    port = free_port()
    ds = _datasets(tmp_path, 1)[0]
    with receiving(LOOPBACK, port, Deadline(10), 16384) as scp:
        ae = AE(ae_title="PACS")
        ae.add_requested_context(Verification)
        ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate(LOOPBACK, port, ae_title=MOVE_AE)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(ds).Status == 0x0000
        assoc.release()
        scp.wait_idle(5)
        got = scp.received
    assert got.instances == 1 and got.bytes > 64 * 64
    assert got.error is None and got.associations == 1


# -- hostile peers ---------------------------------------------------------------------------------


def get_rsp_command(status: int, remaining: int) -> bytes:
    ds = Dataset()
    ds.CommandGroupLength = 0
    ds.AffectedSOPClassUID = STUDY_ROOT_GET
    ds.CommandField = 0x8010
    ds.MessageIDBeingRespondedTo = 1
    ds.CommandDataSetType = 0x0101
    ds.Status = status
    ds.NumberOfRemainingSuboperations = remaining
    ds.NumberOfCompletedSuboperations = 0
    ds.NumberOfFailedSuboperations = 0
    ds.NumberOfWarningSuboperations = 0
    raw = encode_dataset(ds, True, True)
    assert raw is not None
    ds.CommandGroupLength = len(raw) - 12
    raw = encode_dataset(ds, True, True)
    assert raw is not None
    return bytes(raw)


def pending_forever(conn: socket.socket, server: ScriptServer) -> None:
    """Accept, read the C-GET, then send Pending C-GET-RSPs every 20 ms, never a final one."""
    got = _associate(conn, server)
    if got is None:
        return
    rsp = p_data(pdata_context_id(got[1]), get_rsp_command(0xFF00, remaining=1))
    while not server.stopping.wait(0.02):
        try:
            conn.sendall(rsp)
        except OSError:
            return
        with server._lock:  # noqa: SLF001
            server.state["sent"] = server.state.get("sent", 0) + 1


def abort_mid_image(conn: socket.socket, server: ScriptServer) -> None:
    """Accept, read the C-GET, send the command and half the data set of a C-STORE-RQ, A-ABORT."""
    got = _associate(conn, server)
    if got is None:
        return
    cid = pdata_context_id(got[1])
    command = Dataset()
    command.CommandGroupLength = 0
    command.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    command.CommandField = 0x0001
    command.MessageID = 7
    command.Priority = 2
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = "1.2.3.4"
    raw = encode_dataset(command, True, True)
    assert raw is not None
    conn.sendall(p_data(cid, bytes(raw)))
    conn.sendall(p_data(cid, b"\x08\x00\x05\x00" + bytes(2000), command=False, last=False))
    conn.sendall(A_ABORT)
    finish(conn, server)


def test_pacs_aborting_mid_image_is_aborted() -> None:
    with ScriptServer(abort_mid_image) as peer:
        t0 = time.monotonic()
        r = run_retrieve(peer.port, timeout_ms=2000, studyInstanceUID=generate_uid())
        took = time.monotonic() - t0
    assert not r.ok
    assert r.reason == Reason.ABORTED, r.message
    assert took < 2.0
    assert "first_image" not in r.phases


def test_cmove_leaves_no_thread_or_listening_socket(qr: QRServer) -> None:
    port = qr.move_destinations[MOVE_AE]
    before = {t.ident for t in threading.enumerate()}
    r = run_retrieve(
        qr.port,
        studyInstanceUID=qr.study_uid,
        method="move",
        moveDestination=MOVE_AE,
        storeListen=f"{LOOPBACK}:{port}",
    )
    assert r.ok, r.message
    left = [t.name for t in threading.enumerate() if t.ident not in before]
    assert not [n for n in left if n.startswith("storage-scp")], left


def test_pending_forever_times_out_within_the_deadline() -> None:
    with ScriptServer(pending_forever) as peer:
        t0 = time.monotonic()
        r = run_retrieve(peer.port, timeout_ms=1500, studyInstanceUID=generate_uid())
        took = time.monotonic() - t0
        assert peer.state.get("sent", 0) > 10  # it kept the probe busy with Pendings
    assert not r.ok
    assert r.reason == Reason.TIMEOUT, r.message
    assert took < 1.5 + 1.0


def test_move_storage_port_in_use_is_error() -> None:
    with socket.socket() as busy:
        busy.bind((LOOPBACK, 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with ScriptServer(pending_forever) as peer:
            r = run_retrieve(
                peer.port,
                timeout_ms=1500,
                studyInstanceUID=generate_uid(),
                method="move",
                moveDestination=MOVE_AE,
                storeListen=f"{LOOPBACK}:{port}",
            )
    assert not r.ok
    assert r.reason == Reason.ERROR
    assert "storage SCP cannot listen" in r.message


# -- configuration ---------------------------------------------------------------------------------


def test_off_unless_configured_and_validated() -> None:
    assert "dicom_retrieve" not in plans(target())[0].probes
    assert "dicom_retrieve" in plan(retrieve_target(11112, studyInstanceUID="1.2.3")).probes
    bad = [
        {},  # no studyInstanceUID
        {"studyInstanceUID": "1.2.abc"},
        {"studyInstanceUID": "1.2.3", "method": "move"},  # no destination / listen
        {
            "studyInstanceUID": "1.2.3",
            "method": "move",
            "moveDestination": "A",
            "storeListen": "127.0.0.1:0",
        },
        {"studyInstanceUID": "1.2.3", "moveDestination": "A"},  # move settings with get
        {"studyInstanceUID": "1.2.3", "expectedInstances": 0},
    ]
    for cfg in bad:
        with pytest.raises(ConfigError):
            plan(target(probes={"dicom_retrieve": cfg}))
    # switched off explicitly, nothing else is required
    assert (
        "dicom_retrieve" not in plan(target(probes={"dicom_retrieve": {"enabled": False}})).probes
    )
