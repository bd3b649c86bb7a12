"""dicom_find against real Query/Retrieve SCPs on loopback: a pynetdicom SCP that can misbehave
on demand, and DCMTK's dcmqrscp as a second, independent implementation."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from agent.cli_probe import run_once
from agent.redaction import Redactor
from agent.runner import run_probe
from probes.base import Facts, Reason
from probes.dicom_find import NO_MATCH_PATIENT_ID
from tests.helpers import LOOPBACK, bind_retry
from tests.helpers.config import plan, plans, target
from tests.helpers.dicom_scp import Dcmqrscp, DicomSCP, study

AGENT = str(Path(sys.executable).with_name("agent"))
CANARY = "CANARY001"
ALL_PHASES = {"connect", "associate", "dimse", "first_match", "release"}

# Unique identifiers planted in the SCP: they cross the wire in C-FIND responses and must never
# come out of the agent (JSON, messages, logs).
PHI_NAME = "ZZTESTPHI^LEAK"
PHI_ACCESSION = "ZZACCLEAK7731"
PHI_STUDY_UID = "1.2.826.0.1.3680043.10.1082.99.7731"
PHI_OTHER_NAME = "ZZOTHERPHI^LEAK"
PHI_MARKERS = (PHI_NAME, "ZZTESTPHI", PHI_ACCESSION, PHI_STUDY_UID, PHI_OTHER_NAME, "ZZOTHERPHI")


def pacs_studies() -> list[Any]:
    return [
        study(CANARY, PHI_NAME, study_uid=PHI_STUDY_UID, accession=PHI_ACCESSION),
        study("SIM0002", PHI_OTHER_NAME, accession="ACC0002"),
        study("SIM0002", PHI_OTHER_NAME, accession="ACC0003", study_date="20260103"),
    ]


def find_target(port: int, timeout_ms: int = 3000, **find: Any) -> dict[str, Any]:
    return target(
        port=port,
        timeout_ms=timeout_ms,
        only=("dicom_find",),
        probes={"dicom_find": find} if find else None,
    )


def run_find(port: int, timeout_ms: int = 3000, **find: Any):
    return run_probe(plan(find_target(port, timeout_ms, **find)), "dicom_find")


def test_canary_found_with_expected_count_one_succeeds_with_all_phases() -> None:
    with DicomSCP(pacs_studies()) as scp:
        r = run_find(scp.port, patientID=CANARY, expectedCount=1)
    assert r.ok, r.message
    assert r.reason is None and r.attempts == 1
    assert r.facts == Facts(matches=1)
    assert ALL_PHASES <= set(r.phases), r.phases
    assert all(v > 0 for v in r.phases.values())
    # first_match is a marker inside dimse: it is not added to the run's duration
    assert r.phases["first_match"] <= r.phases["dimse"]
    assert r.duration == pytest.approx(sum(v for k, v in r.phases.items() if k != "first_match"))
    assert scp.queries[-1].PatientID == CANARY


def test_canary_not_found_is_unexpected_result() -> None:
    with DicomSCP(pacs_studies()) as scp:
        r = run_find(scp.port, patientID="NOBODY-HERE", expectedCount=1)
    assert not r.ok
    assert r.reason == Reason.UNEXPECTED_RESULT
    assert "0 matches" in r.message
    assert "first_match" not in r.phases and {"associate", "dimse", "release"} <= set(r.phases)


def test_wrong_count_is_unexpected_result() -> None:
    # SIM0002 has two studies; the configured expectation says one
    with DicomSCP(pacs_studies()) as scp:
        r = run_find(scp.port, patientID="SIM0002", expectedCount=1)
    assert not r.ok
    assert r.reason == Reason.UNEXPECTED_RESULT
    assert "2 matches" in r.message and "expected 1" in r.message


def test_min_count_is_a_lower_bound() -> None:
    with DicomSCP(pacs_studies()) as scp:
        ok = run_find(scp.port, patientID="SIM0002", minCount=2)
        short = run_find(scp.port, patientID=CANARY, minCount=2)
    assert ok.ok and ok.facts == Facts(matches=2), ok.message
    assert not short.ok and short.reason == Reason.UNEXPECTED_RESULT


def test_match_that_does_not_satisfy_the_query_is_unexpected_result() -> None:
    # A broken PACS that ignores the query keys and returns everything
    with DicomSCP(pacs_studies(), ignore_query=True) as scp:
        r = run_find(scp.port, patientID=CANARY, expectedCount=1)
    assert not r.ok
    assert r.reason == Reason.UNEXPECTED_RESULT
    assert "does not satisfy" in r.message


@pytest.mark.parametrize("status", [0xC000, 0xA700, 0xA900])
def test_failure_status_is_dimse_status(status: int) -> None:
    with DicomSCP(pacs_studies(), find_status=status) as scp:
        r = run_find(scp.port, patientID=CANARY, expectedCount=1)
    assert not r.ok
    assert r.reason == Reason.DIMSE_STATUS
    assert f"0x{status:04X}" in r.message
    assert "dimse" in r.phases


def test_stall_after_first_match_times_out_within_the_deadline() -> None:
    timeout = 1.0
    with DicomSCP(pacs_studies(), stall_after_first=True) as scp:
        t0 = time.monotonic()
        r = run_find(scp.port, timeout_ms=int(timeout * 1000), patientID="SIM0002", expectedCount=2)
        elapsed = time.monotonic() - t0
        assert scp.stalled.is_set(), "the SCP never reached its stall"
    assert not r.ok
    assert r.reason == Reason.TIMEOUT, r.message
    # it waited for the deadline, and not (much) longer: at most twice it
    assert timeout - 0.05 <= elapsed < 2 * timeout, elapsed
    # it never got a final response, so no dimse phase (and no release: the association aborted)
    assert "dimse" not in r.phases and "release" not in r.phases
    assert {"connect", "associate"} <= set(r.phases)


def test_default_query_matches_nobody_and_expects_zero() -> None:
    """No canary configured: a PatientID that matches no patient, expecting 0 matches."""
    with DicomSCP(pacs_studies()) as scp:
        r = run_find(scp.port)
        sent = scp.queries[-1]
    assert r.ok, r.message
    assert r.facts == Facts(matches=0)
    assert sent.PatientID == NO_MATCH_PATIENT_ID
    assert sent.QueryRetrieveLevel == "STUDY"
    assert "first_match" not in r.phases
    assert {"connect", "associate", "dimse", "release"} <= set(r.phases)


def test_default_query_fails_when_the_pacs_returns_matches_anyway() -> None:
    # The no-match query must really expect 0: a PACS answering it with data is unexpected
    with DicomSCP(pacs_studies(), ignore_query=True) as scp:
        r = run_find(scp.port)
    assert not r.ok and r.reason == Reason.UNEXPECTED_RESULT


# -- PHI never leaves the probe -------------------------------------------------------------------


def _assert_no_phi(text: str, where: str) -> None:
    for marker in PHI_MARKERS:
        assert marker not in text, f"identifier {marker!r} leaked into {where}"


def test_returned_identifiers_never_appear_in_results_json_or_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, from every logger
    probe_thread_ids: set[int] = set()
    with DicomSCP(pacs_studies()) as scp:
        t = find_target(scp.port, patientID=CANARY, expectedCount=1)
        wrong = {**find_target(scp.port, patientID="SIM0002", expectedCount=1), "id": "wrong"}
        status = DicomSCP(pacs_studies(), find_status=0xC001).start()
        try:
            failing = {**find_target(status.port, patientID=CANARY), "id": "failing"}
            ps = plans(t, wrong, failing)
            direct = [run_probe(p, "dicom_find") for p in ps]
            probe_thread_ids.add(threading.get_ident())
            doc = run_once(ps, Redactor())
        finally:
            status.stop()
    assert [r.ok for r in direct] == [True, False, False]
    checks = {t["id"]: t["checks"][0] for t in doc["targets"]}
    assert checks["pacs-test"]["status"] == "PASS" and checks["pacs-test"]["matches"] == 1
    assert checks["wrong"]["status"] == "FAIL"
    assert checks["failing"]["reason"] == "dimse_status"

    _assert_no_phi(json.dumps(doc), "the --once JSON")
    for r in direct:
        _assert_no_phi(r.message + repr(r.facts) + repr(r), "a ProbeResult")
    # Records from the SCP side (pynetdicom logging what it sends, in its own threads) are the
    # test peer's, not the agent's; everything else must be clean.
    ours = [
        rec
        for rec in caplog.records
        if not rec.name.startswith("pynetdicom")
        or rec.thread in probe_thread_ids
        or (rec.threadName or "").startswith("ThreadPoolExecutor")
    ]
    for rec in ours:
        _assert_no_phi(rec.getMessage(), f"log record {rec.name}")


def test_cli_once_json_and_verbose_logs_hold_no_identifiers(tmp_path: Path) -> None:
    with DicomSCP(pacs_studies()) as scp:
        cfg = tmp_path / "find.json"
        cfg.write_text(json.dumps(find_target(scp.port, patientID=CANARY, expectedCount=1)))
        proc = subprocess.run(
            [AGENT, "probe", "--once", "--config", str(cfg), "--output", "json", "-v"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert scp.find_count >= 1
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["targets"][0]["checks"][0]["matches"] == 1
    _assert_no_phi(proc.stdout, "--once stdout")
    _assert_no_phi(proc.stderr, "--once stderr (DEBUG logs)")


# -- DCMTK dcmqrscp as a second, independent Query/Retrieve SCP ---------------------------------


@pytest.fixture
def dcmqrscp(tmp_path: Path):
    server = Dcmqrscp(
        tmp_path / "qr",
        [
            study("QRCANARY01", "ZZQRPHI^ONE", accession="QRACC0001"),
            study("QROTHER002", "ZZQRPHI^TWO", accession="QRACC0002"),
        ],
    )
    server.start()
    try:
        yield server
    finally:
        code = server.stop()
        assert code is not None  # the process is gone (terminated by us, not left running)


def test_dcmqrscp_canary_found_and_default_query_returns_zero(dcmqrscp: Dcmqrscp) -> None:
    canary = run_probe(
        plan(
            target(
                port=dcmqrscp.port,
                called_aet="QRSCP",
                only=("dicom_find",),
                probes={"dicom_find": {"patientID": "QRCANARY01", "expectedCount": 1}},
            )
        ),
        "dicom_find",
    )
    assert canary.ok, canary.message
    assert canary.facts == Facts(matches=1)
    assert ALL_PHASES <= set(canary.phases), canary.phases

    default = run_probe(
        plan(target(port=dcmqrscp.port, called_aet="QRSCP", only=("dicom_find",))), "dicom_find"
    )
    assert default.ok, default.message
    assert default.facts == Facts(matches=0)

    missing = run_probe(
        plan(
            target(
                port=dcmqrscp.port,
                called_aet="QRSCP",
                only=("dicom_find",),
                probes={"dicom_find": {"patientID": "NOT-THERE", "expectedCount": 1}},
            )
        ),
        "dicom_find",
    )
    assert not missing.ok and missing.reason == Reason.UNEXPECTED_RESULT
    for r in (canary, default, missing):
        assert "ZZQRPHI" not in r.message + repr(r)


def test_dcmqrscp_stopped_is_refused(tmp_path: Path) -> None:
    server = Dcmqrscp(tmp_path / "qr", [study("QRCANARY01")]).start()
    port = server.port
    up = run_probe(plan(target(port=port, called_aet="QRSCP", only=("dicom_echo",))), "dicom_echo")
    assert up.ok, up.message
    assert server.stop() is not None
    # hold the released port (bound, not listening): no other process and no client's source
    # port (a self-connect) can take it while the probe runs
    with socket.socket() as hold:
        bind_retry(lambda: hold.bind((LOOPBACK, port)))
        down = run_probe(
            plan(target(port=port, called_aet="QRSCP", only=("dicom_echo",))), "dicom_echo"
        )
    assert not down.ok and down.reason == Reason.REFUSED
