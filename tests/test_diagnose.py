"""`agent diagnose` against real loopback peers: each failure stops at its own step, names
host:port and says what to check; a healthy PACS passes every step; exit codes as probe --once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from agent.cli import main
from agent.simulator import SimulatedPACS
from tests.helpers import LOOPBACK, bind_retry, free_port
from tests.helpers.config import target
from tests.helpers.dicom_scp import DicomSCP
from tests.helpers.ports import held_refused_port
from tests.helpers.tls import TLSMaterial


def run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], targets: list[dict[str, Any]], *args: str
) -> tuple[int, str]:
    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps({"targets": targets}))
    code = main(["diagnose", "--config", str(cfg), *args])
    return code, capsys.readouterr().out


def steps(doc: dict[str, Any], i: int = 0) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in doc["targets"][i]["steps"]}


@pytest.fixture
def strict_scp() -> Iterator[int]:
    """A pynetdicom SCP that answers only to its own AE title (rejects any other called AE)."""
    ae = AE(ae_title="REAL_PACS")
    ae.add_supported_context(Verification)
    ae.require_called_aet = True
    server = bind_retry(lambda: ae.start_server((LOOPBACK, 0), block=False))
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


def test_connection_refused_stops_at_tcp(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = held_refused_port()
    code, out = run(tmp_path, capsys, [target("pacs-down", port=port)], "--output", "json")
    doc = json.loads(out)
    assert code == 2 and doc["status"] == "FAIL"
    s = steps(doc)
    assert s["dns"]["status"] == "OK"
    assert s["tcp"]["status"] == "FAIL" and s["tcp"]["reason"] == "refused"
    assert list(s) == ["dns", "tcp"]  # stopped at the first failure
    hint = doc["targets"][0]["hint"]
    assert f"127.0.0.1:{port}" in hint and "service is down" in hint


def test_wrong_called_ae_title_is_an_association_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], strict_scp: int
) -> None:
    t = target("pacs-aet", port=strict_scp, called_aet="WRONG_AET")
    code, out = run(tmp_path, capsys, [t])
    assert code == 2
    lines = out.splitlines()
    assert any(ln.strip().startswith("TCP") and " OK " in ln for ln in lines)
    assoc = next(ln for ln in lines if ln.strip().startswith("Association"))
    assert "FAIL" in assoc and "[rejected]" in assoc and " ms" in assoc
    hint = " ".join(out[out.index("Hint:") : out.index("Result:")].split())  # wrapped lines
    assert f"127.0.0.1:{strict_scp}" in hint and "AE title" in hint and "'WRONG_AET'" in hint
    assert not any(ln.strip().startswith("C-ECHO") for ln in lines)


def test_certificate_from_the_wrong_ca_is_a_tls_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tls_material: TLSMaterial
) -> None:
    leaf = tls_material.good()
    with DicomSCP(ssl_context=leaf.server_context()) as scp:
        t = target(
            "pacs-tls",
            port=scp.port,
            config={"enableTLS": True, "tls": {"caFile": str(tls_material.other_ca_file)}},
        )
        code, out = run(tmp_path, capsys, [t], "--output", "json")
    doc = json.loads(out)
    s = steps(doc)
    assert code == 2
    assert s["tcp"]["status"] == "OK" and s["tls"]["status"] == "FAIL"
    assert s["tls"]["reason"] == "tls" and "certificate" in s["tls"]["detail"]
    assert "association" not in s
    hint = doc["targets"][0]["hint"]
    assert f"127.0.0.1:{scp.port}" in hint and "certificate" in hint and "caFile" in hint


def test_healthy_tls_pacs_passes_every_dicom_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tls_material: TLSMaterial
) -> None:
    leaf = tls_material.good()
    with DicomSCP(ssl_context=leaf.server_context()) as scp:
        t = target(
            "pacs-tls-ok",
            port=scp.port,
            config={"enableTLS": True, "tls": {"caFile": str(tls_material.ca_file)}},
        )
        code, out = run(tmp_path, capsys, [t], "--output", "json")
    doc = json.loads(out)
    s = steps(doc)
    assert code == 0, out
    assert [k for k in s] == ["dns", "tcp", "tls", "association", "c-echo", "c-find", "api"]
    assert all(s[k]["status"] == "OK" for k in ("tcp", "tls", "association", "c-echo", "c-find"))
    assert "certificate valid until" in s["tls"]["detail"]
    assert s["api"]["status"] == "SKIP" and doc["targets"][0]["hint"] is None
    assert all(s[k]["ms"] is not None and s[k]["ms"] >= 0 for k in ("tcp", "tls", "c-echo"))


def test_healthy_simulator_text_one_line_per_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SimulatedPACS() as sim:
        code, out = run(tmp_path, capsys, [sim.endpoint_config("pacs-sim")], "--target", "pacs-sim")
    assert code == 0, out
    lines = [ln.strip() for ln in out.splitlines()]
    for title in ("DNS", "TCP", "Association", "C-ECHO", "C-FIND", "API (HTTP)"):
        row = next(ln for ln in lines if ln.startswith(title))
        assert " OK " in row, row
    assert any(ln.startswith("TLS") and "SKIP" in ln for ln in lines)
    assert "Result: OK" in out and "Hint:" not in out


def test_unknown_target_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(tmp_path, capsys, [target("pacs-a")], "--target", "nope")
    assert code == 3


def test_imaging_probes_follow_the_guides_steps_where_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SimulatedPACS(imaging=True) as sim:
        code, out = run(tmp_path, capsys, [sim.endpoint_config("pacs-sim")], "--output", "json")
    s = steps(json.loads(out))
    assert code == 0, out
    assert list(s)[7:] == [
        "worklist", "dicom_capabilities", "dicom_retrieve", "dicom_store", "dicomweb"
    ]
    assert all(s[k]["status"] == "OK" and s[k]["ms"] is not None for k in list(s)[7:]), s


def test_a_failing_retrieve_stops_there_with_its_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SimulatedPACS(imaging=True) as sim:
        t = sim.endpoint_config("pacs-sim")
        # C-MOVE to a destination the PACS does not know: 0xA801
        t["probes"]["dicom_retrieve"] = {
            "studyInstanceUID": t["probes"]["dicom_retrieve"]["studyInstanceUID"],
            "method": "move",
            "moveDestination": "UNKNOWN_AE",
            "storeListen": f"{LOOPBACK}:{free_port()}",  # ours to bind, only during the run
        }
        code, out = run(tmp_path, capsys, [t], "--output", "json")
    doc = json.loads(out)
    s = steps(doc)
    assert code == 2, out
    assert s["dicom_retrieve"]["status"] == "FAIL"
    assert s["dicom_retrieve"]["reason"] == "dimse_status"
    assert "0xA801" in s["dicom_retrieve"]["detail"]
    assert "dicom_store" not in s  # stopped at the first failure
    hint = doc["targets"][0]["hint"]
    assert f"{LOOPBACK}:{sim.dicom_port}" in hint and "move destination" in hint
