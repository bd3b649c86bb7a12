"""DIMSE statuses and association rejections by their standard names, from real peers (pynetdicom
SCPs and DCMTK's dcmqrscp), and as a bounded label on pacs_probe_dicom_status_total."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from pydicom.uid import generate_uid

from agent.evaluator import HealthState
from agent.prometheus_exporter import PrometheusExporter
from agent.runner import run_probe
from probes.base import Reason
from probes.dicom_status import (
    OTHER,
    describe_reject,
    describe_status,
    reject_label,
    status_label,
)
from tests.helpers import LOOPBACK, free_port
from tests.helpers.config import plan, target
from tests.helpers.dcmtk import QRServer
from tests.helpers.dicom_scp import Dcmqrscp, DicomSCP, study
from tests.helpers.observe import info, observation

SERVICES = ("C-ECHO", "C-FIND", "MWL C-FIND", "C-MOVE", "C-GET", "C-STORE")


def test_statuses_read_by_their_standard_names() -> None:
    assert describe_status(0xA801, "C-MOVE") == "C-MOVE status 0xA801 Move destination unknown"
    assert describe_status(0x0122, "C-FIND") == (
        "C-FIND status 0x0122 Refused: SOP Class Not Supported"
    )
    assert describe_status(0xA700, "C-STORE").startswith("C-STORE status 0xA700 Refused: Out of")
    assert "one or more failures" in describe_status(0xB000, "C-GET")
    # a code no table knows still says which class of outcome it is
    assert describe_status(0xA123, "C-ECHO") == "C-ECHO status 0xA123 Failure"


def test_rejections_read_by_their_standard_names() -> None:
    assert describe_reject(1, 1, 7) == (
        "association rejected permanently by the called peer: called AE title not recognized"
    )
    assert describe_reject(1, 1, 3).endswith("calling AE title not recognized")
    assert describe_reject(2, 3, 1).endswith(
        "transiently by the peer's network layer: temporary congestion"
    )
    assert describe_reject(1, 2, 2).endswith("protocol version not supported")
    assert describe_reject(9, 9, 9) == "association rejected (result 9) by source 9: reason 9"


def test_labels_are_a_bounded_set_whatever_the_peer_sends() -> None:
    assert status_label(0xA801, "C-MOVE") == "0xA801"
    assert status_label(0xC123, "C-FIND") == "0xCxxx"
    assert status_label(0xA7FE, "C-STORE") == "0xA7xx"
    assert status_label(0x1234, "C-ECHO") == OTHER
    assert reject_label(1, 1, 7) == "RJ-1-1-7"
    assert reject_label(1, 1, 5) == OTHER
    labels = {status_label(code, svc) for svc in SERVICES for code in range(0x10000)}
    labels |= {reject_label(a, b, c) for a in range(256) for b in range(256) for c in range(16)}
    # every 16-bit code under every service, every rejection: a few dozen values, not 65,536
    assert len(labels) < 80, len(labels)
    assert OTHER in labels


def test_called_ae_title_not_recognized_from_pynetdicom() -> None:
    with DicomSCP(ae_title="RIGHT_AE") as scp:
        # the helper accepts any called AE title: make this peer check it, as a PACS does
        scp._server.ae.require_called_aet = True  # noqa: SLF001
        r = run_probe(
            plan(target(port=scp.port, called_aet="WRONG_AE", only=("dicom_echo",))), "dicom_echo"
        )
    assert not r.ok and r.reason == Reason.REJECTED
    assert "called AE title not recognized" in r.message, r.message
    assert r.facts.dicom_status == "RJ-1-1-7"


def test_called_ae_title_not_recognized_from_dcmtk(tmp_path: Path) -> None:
    with Dcmqrscp(tmp_path / "qr", [study("SIM0001")], ae_title="QRSCP") as qr:
        r = run_probe(
            plan(target(port=qr.port, called_aet="NOT_QRSCP", only=("dicom_echo",))),
            "dicom_echo",
        )
    assert not r.ok and r.reason == Reason.REJECTED
    assert "called AE title not recognized" in r.message, r.message
    assert r.facts.dicom_status == "RJ-1-1-7"


def test_dimse_failure_status_named_and_counted() -> None:
    with DicomSCP([study("SIM0001")], find_status=0xA700) as scp:
        p = plan(target(port=scp.port, only=("dicom_find",)))
        r1 = run_probe(p, "dicom_find")
        r2 = run_probe(p, "dicom_find")
    with DicomSCP(echo_status=0x0122) as scp:
        r3 = run_probe(plan(target(port=scp.port, only=("dicom_echo",))), "dicom_echo")
    assert not r1.ok and r1.reason == Reason.DIMSE_STATUS
    assert r1.message == "C-FIND status 0xA700 Refused: Out of Resources"
    assert r1.facts.dicom_status == "0xA7xx"
    assert r3.message == "C-ECHO status 0x0122 Refused: SOP Class Not Supported"

    ex = PrometheusExporter()
    ex.add_target(info(r1.target, ["dicom_find", "dicom_echo"]))
    for r in (r1, r2, r3):
        ex.observe(observation(r, target_state=HealthState.UNHEALTHY))
    # a success has no status series
    families = {f.name: f for f in text_string_to_metric_families(ex.render().decode())}
    samples = {
        (s.labels["probe"], s.labels["status"]): s.value
        for s in families["pacs_probe_dicom_status"].samples
    }
    assert samples == {("dicom_find", "0xA7xx"): 2.0, ("dicom_echo", "0x0122"): 1.0}


def test_move_destination_unknown_from_dcmtk_is_counted_by_its_code(tmp_path: Path) -> None:
    qr = QRServer(tmp_path / "qr", generate_uid(), 1)
    qr.start()
    try:
        t = target(
            port=qr.port,
            called_aet="QRSCP",
            only=("dicom_retrieve",),
            probes={
                "dicom_retrieve": {
                    "studyInstanceUID": qr.study_uid,
                    "method": "move",
                    "moveDestination": "NOT_KNOWN",
                    "storeListen": f"{LOOPBACK}:{free_port()}",
                }
            },
        )
        r = run_probe(plan(t), "dicom_retrieve")
    finally:
        qr.stop()
    assert not r.ok and r.reason == Reason.DIMSE_STATUS
    assert "C-MOVE status 0xA801 Move destination unknown" in r.message
    assert r.facts.dicom_status == "0xA801"
