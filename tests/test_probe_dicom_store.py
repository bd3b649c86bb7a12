"""dicom_store against real peers on loopback: DCMTK's storescp and dcmqrscp (store, then find),
a pynetdicom storage SCP that refuses or never indexes, and hostile peers that abort mid-object."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

from agent.runner import run_probe
from probes.base import Reason
from probes.dicom_store import PATIENT_NAME, derived_uid, patient_id
from tests.helpers import LOOPBACK, bind_retry
from tests.helpers.config import plan, plans, target
from tests.helpers.dcmtk import QRServer, StoreSCP
from tests.helpers.hostile_peers import A_ABORT, ScriptServer, _associate, finish

TARGET = "pacs-store-test"


def store_target(port: int, called_aet: str, timeout_ms: int = 5000, **cfg: Any) -> dict[str, Any]:
    return target(
        TARGET,
        port=port,
        called_aet=called_aet,
        timeout_ms=timeout_ms,
        only=("dicom_store",),
        probes={"dicom_store": {"enabled": True, **cfg}},
    )


def run_store(port: int, called_aet: str = "STORESCP", timeout_ms: int = 5000, **cfg: Any):
    return run_probe(plan(store_target(port, called_aet, timeout_ms, **cfg)), "dicom_store")


def test_uids_are_fixed_per_target_and_differ_between_targets() -> None:
    # fixed: the same value in every process and release (a changed derivation would leave a
    # second object on every PACS)
    assert derived_uid("pacs-prod", "instance") == ("2.25.187919107252427386672841094790370285078")
    uids = {derived_uid(t, k) for t in ("a", "b") for k in ("study", "series", "instance")}
    assert len(uids) == 6
    assert all(u.startswith("2.25.") and len(u) <= 64 for u in uids)
    assert patient_id("x" * 100) == ("PACS-HEALTH-" + "x" * 100)[:64]


def test_opt_in_only() -> None:
    assert "dicom_store" not in plans(target())[0].probes
    assert "dicom_store" in plan(store_target(11112, "X")).probes


def test_storescp_receives_one_synthetic_non_patient_object_however_often_it_runs(
    tmp_path: Path,
) -> None:
    with StoreSCP(tmp_path / "scp") as scp:
        p = plan(store_target(scp.port, scp.ae_title))
        results = [run_probe(p, "dicom_store") for _ in range(3)]
        files = scp.files()
    for r in results:
        assert r.ok, r.message
        assert {"connect", "associate", "store", "release"} <= set(r.phases), r.phases
        assert "findable" not in r.phases
        assert r.phases["store"] > 0
    assert len(files) == 1, files  # same SOP Instance UID every time: one object
    ds = dcmread(files[0])
    assert str(ds.PatientName) == PATIENT_NAME == "PACS^HEALTH^CHECK"
    assert ds.PatientID == f"PACS-HEALTH-{TARGET}"
    assert ds.SOPClassUID == SecondaryCaptureImageStorage
    assert ds.SOPInstanceUID == derived_uid(TARGET, "instance")
    assert ds.StudyInstanceUID == derived_uid(TARGET, "study")
    assert ds.SeriesInstanceUID == derived_uid(TARGET, "series")
    assert ds.Rows == ds.Columns == 8 and len(ds.PixelData) == 64


def test_dcmqrscp_store_then_findable_and_still_one_object(tmp_path: Path) -> None:
    with QRServer(tmp_path / "qr", generate_uid(), 1) as qr:
        p = plan(store_target(qr.port, qr.ae_title, verify=True))
        for _ in range(3):
            r = run_probe(p, "dicom_store")
            assert r.ok, r.message
            assert {"store", "findable", "release"} <= set(r.phases), r.phases
            assert r.phases["findable"] > 0
            assert r.message == "C-STORE successful, findable"
        # the PACS holds one object for the target: retrieve its study and count
        get = plan(
            target(
                port=qr.port,
                called_aet=qr.ae_title,
                only=("dicom_retrieve",),
                probes={
                    "dicom_retrieve": {
                        "studyInstanceUID": derived_uid(TARGET, "study"),
                        "expectedInstances": 1,
                    }
                },
            )
        )
        g = run_probe(get, "dicom_retrieve")
    assert g.ok, g.message


# -- pynetdicom storage SCP that refuses or never indexes ------------------------------------------


class PynetdicomStoreSCP:
    def __init__(self, status: int = 0x0000) -> None:
        self.status = status
        self.stored = 0
        self.finds = 0
        self.server: Any = None
        self.port = 0

    def _on_store(self, event: Any) -> int:
        self.stored += 1
        return self.status

    def _on_find(self, event: Any) -> Iterator[Any]:
        self.finds += 1
        yield 0x0000, None  # never finds it

    def __enter__(self) -> PynetdicomStoreSCP:
        ae = AE(ae_title="PYSTORE")
        ae.add_supported_context(SecondaryCaptureImageStorage)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 10
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_FIND, self._on_find)]
        self.server = bind_retry(
            lambda: ae.start_server((LOOPBACK, 0), block=False, evt_handlers=handlers)
        )
        self.port = int(self.server.server_address[1])
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def test_refused_store_is_dimse_status_with_its_standard_name() -> None:
    with PynetdicomStoreSCP(status=0xA700) as scp:
        r = run_store(scp.port, "PYSTORE")
    assert not r.ok
    assert r.reason == Reason.DIMSE_STATUS
    assert "0xA700" in r.message and "Out of Resources" in r.message, r.message


def test_never_findable_is_unexpected_result_within_the_deadline() -> None:
    with PynetdicomStoreSCP() as scp:
        t0 = time.monotonic()
        r = run_store(scp.port, "PYSTORE", timeout_ms=1500, verify=True)
        took = time.monotonic() - t0
        assert scp.stored == 1 and scp.finds >= 2
    assert not r.ok
    assert r.reason == Reason.UNEXPECTED_RESULT, r.message
    assert "not found by C-FIND" in r.message
    assert took < 1.5 + 0.5


# -- hostile peers ---------------------------------------------------------------------------------


def abort_mid_object(conn: socket.socket, server: ScriptServer) -> None:
    """Accept, read the C-STORE's first PDU (its command), then A-ABORT before the data set."""
    if _associate(conn, server) is not None:
        conn.sendall(A_ABORT)
        finish(conn, server)


def close_mid_object(conn: socket.socket, server: ScriptServer) -> None:
    """Accept, read the C-STORE's command, then drop the connection (RST on unread data)."""
    if _associate(conn, server) is not None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()


@pytest.mark.parametrize("script", [abort_mid_object, close_mid_object])
def test_store_scp_that_aborts_mid_object_is_aborted(script: Any) -> None:
    with ScriptServer(script) as peer:
        t0 = time.monotonic()
        r = run_store(peer.port, timeout_ms=2000)
        took = time.monotonic() - t0
    assert not r.ok
    assert r.reason == Reason.ABORTED, r.message
    assert took < 2.0
    assert "store" not in r.phases
