"""dicom_capabilities against real acceptors: pynetdicom SCPs that accept only some transfer
syntaxes, and DCMTK's storescp (which accepts uncompressed syntaxes only unless told otherwise)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE

from agent.config import ConfigError
from agent.evaluator import CheckStatus, HealthEvaluator, HealthState
from agent.prometheus_exporter import PrometheusExporter
from agent.runner import run_probe
from probes.base import Reason
from probes.dicom_capabilities import resolve_transfer_syntax, uid_name
from tests.helpers import LOOPBACK, bind_retry, free_port, wait_until
from tests.helpers.agent_cli import run_agent
from tests.helpers.config import plan, target
from tests.helpers.observe import info, observation
from tests.helpers.processes import stop_group

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "examples" / "sectra-pacs-prod.json"
CT, MR, XA, SC, SR = (
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.12.1",
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.88.11",
)
J2K_LOSSLESS, JPEG_LOSSLESS, IMPLICIT = (
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2",
)
J2K, EXPLICIT = "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.1"
GUIDE_SOPS = [CT, MR, XA, SC, SR]
GUIDE_TS = [J2K_LOSSLESS, JPEG_LOSSLESS, IMPLICIT]


@contextmanager
def acceptor(supported: dict[str, list[str]], ae_title: str = "TEST_PACS") -> Iterator[int]:
    """A pynetdicom SCP accepting exactly `supported` (SOP class → transfer syntaxes)."""
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = False
    for sop, syntaxes in supported.items():
        ae.add_supported_context(sop, syntaxes)
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 10
    server = bind_retry(lambda: ae.start_server((LOOPBACK, 0), block=False))
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


def cap_target(
    port: int, sectra: dict[str, Any] | None = None, dicom: dict | None = None, **cap: Any
) -> dict[str, Any]:
    t = target(
        port=port, only=("dicom_capabilities",), probes={"dicom_capabilities": cap}, sectra=sectra
    )
    if dicom is not None:
        t["dicomConfig"] = dicom
    return t


def run_cap(port: int, **kw: Any):
    return run_probe(plan(cap_target(port, **kw)), "dicom_capabilities")


def guide_lists() -> dict[str, Any]:
    return {
        "sectra": {"preferredTransferSyntax": GUIDE_TS},
        "dicom": {"supportedSOPClasses": GUIDE_SOPS},
    }


def test_all_pairs_accepted_passes() -> None:
    with acceptor({s: GUIDE_TS for s in GUIDE_SOPS}) as port:
        r = run_cap(port, **guide_lists())
    assert r.ok and r.warning is None, r.message
    assert r.message == "all 15 presentation contexts accepted"
    assert r.facts.accepted == 15 and r.facts.proposed == 15
    assert len(r.facts.contexts) == 15
    assert {"connect", "associate", "release"} <= set(r.phases)
    assert "dimse" not in r.phases  # one association, no DIMSE exchange


def test_refused_pairs_are_a_warning_naming_each_pair() -> None:
    # this PACS has lost JPEG 2000 everywhere, and CT with JPEG Lossless
    supported = {s: [JPEG_LOSSLESS, IMPLICIT] for s in GUIDE_SOPS}
    supported[CT] = [IMPLICIT]
    with acceptor(supported) as port:
        r = run_cap(port, **guide_lists())
    assert r.ok, r.message
    assert r.message == "9 of 15 presentation contexts accepted"
    assert r.warning is not None and r.warning.startswith("6 of 15 presentation contexts refused")
    assert (
        "CT Image Storage (1.2.840.10008.5.1.4.1.1.2) with "
        "JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.90)"
    ) in r.warning
    assert "CT Image Storage (1.2.840.10008.5.1.4.1.1.2) with JPEG Lossless" in r.warning
    assert "MR Image Storage (1.2.840.10008.5.1.4.1.1.4) with JPEG Lossless" not in r.warning
    # the check reads WARN
    p = plan(cap_target(port=11112, **guide_lists()))
    ev = HealthEvaluator()
    ev.add_target(p.id, p.name, p.thresholds, list(p.probes))
    tr = ev.update(r, None)
    assert tr.check_after == CheckStatus.WARN
    # and each pair is a series, 1 or 0
    ex = PrometheusExporter()
    ex.add_target(info(r.target, ["dicom_capabilities"]))
    ex.observe(observation(r, target_state=HealthState.DEGRADED))
    fams = {f.name: f for f in text_string_to_metric_families(ex.render().decode())}
    got = {
        (s.labels["sop_class"], s.labels["transfer_syntax"]): s.value
        for s in fams["pacs_dicom_context_accepted"].samples
    }
    assert len(got) == 15
    assert got[(CT, J2K_LOSSLESS)] == 0.0 and got[(CT, JPEG_LOSSLESS)] == 0.0
    assert got[(CT, IMPLICIT)] == 1.0 and got[(MR, JPEG_LOSSLESS)] == 1.0


def test_nothing_accepted_fails_rejected() -> None:
    with acceptor({"1.2.840.10008.1.1": [IMPLICIT]}) as port:
        r = run_cap(port, **guide_lists())
    assert not r.ok and r.reason == Reason.REJECTED
    assert r.message.startswith("none of 15 presentation contexts accepted")
    # the failed run still reports every pair, so the series read 0 from the first run on
    ex = PrometheusExporter()
    ex.add_target(info(r.target, ["dicom_capabilities"]))
    ex.observe(observation(r, target_state=HealthState.UNHEALTHY))
    fams = {f.name: f for f in text_string_to_metric_families(ex.render().decode())}
    values = [s.value for s in fams["pacs_dicom_context_accepted"].samples]
    assert len(values) == 15 and set(values) == {0.0}


def test_transfer_syntax_names_from_the_guide_and_pydicom() -> None:
    assert resolve_transfer_syntax("JPEG2000") == J2K
    assert resolve_transfer_syntax("JPEG_LOSSLESS") == JPEG_LOSSLESS
    assert resolve_transfer_syntax("jpeg2000-lossless") == J2K_LOSSLESS
    assert resolve_transfer_syntax("ExplicitVRLittleEndian") == EXPLICIT
    assert resolve_transfer_syntax(IMPLICIT) == IMPLICIT
    assert uid_name(J2K) == "JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91)"
    with acceptor({CT: [J2K, EXPLICIT]}) as port:
        r = run_cap(
            port,
            sopClasses=["CTImageStorage"],
            transferSyntaxes=["JPEG2000", "JPEG_LOSSLESS", "EXPLICIT_VR_LITTLE_ENDIAN"],
        )
    assert r.ok and r.facts.accepted == 2
    assert r.warning == (
        "1 of 3 presentation contexts refused: CT Image Storage (1.2.840.10008.5.1.4.1.1.2) with "
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1]) "
        "(1.2.840.10008.1.2.4.70)"
    )


def test_config_refuses_more_than_128_contexts_and_unknown_names() -> None:
    sops = [f"1.2.826.0.1.3680043.10.1082.5.{i}" for i in range(65)]
    with pytest.raises(
        ConfigError, match="130 presentation contexts; one association can propose at most 128"
    ):
        plan(cap_target(11112, sopClasses=sops, transferSyntaxes=[IMPLICIT, EXPLICIT]))
    plan(cap_target(11112, sopClasses=sops[:64], transferSyntaxes=[IMPLICIT, EXPLICIT]))
    with pytest.raises(ConfigError, match="unknown transfer syntax 'JPEG3000'"):
        plan(cap_target(11112, sopClasses=[CT], transferSyntaxes=["JPEG3000"]))
    with pytest.raises(ConfigError, match="no SOP classes"):
        plan(cap_target(11112, transferSyntaxes=[IMPLICIT]))
    assert "dicom_capabilities" not in plan(target(port=11112)).probes  # off unless configured


def test_the_guides_sample_with_a_capabilities_block(tmp_path: Path) -> None:
    doc = json.loads(GUIDE.read_text())
    doc["probes"] = {"dicom_capabilities": {}}
    p = plan(doc, env={"SECTRA_API_PASSWORD": "x", "SECTRA_API_KEY": "y"})
    probe = p.probes["dicom_capabilities"]
    assert len(probe.pairs) == 15  # 5 SOP classes x 3 syntaxes of secttraConfig/dicomConfig


def _storescp() -> str:
    path = shutil.which("storescp")
    assert path, "DCMTK's storescp not found on PATH (install dcmtk)"  # fail, never skip
    return path


def _ready(proc: subprocess.Popen[bytes], port: int) -> bool:
    if proc.poll() is not None:
        return True  # exited: the caller sees it
    echoscu = shutil.which("echoscu")
    assert echoscu, "DCMTK's echoscu not found on PATH (install dcmtk)"
    r = subprocess.run([echoscu, "-to", "2", LOOPBACK, str(port)], capture_output=True, timeout=10)
    return r.returncode == 0


@contextmanager
def storescp(workdir: Path) -> Iterator[int]:
    """DCMTK's storage SCP with its default policy: uncompressed transfer syntaxes only."""
    log = (workdir / "storescp.log").open("ab")
    proc = None
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [_storescp(), "-od", str(workdir), "-aet", "STORESCP", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda p=proc, n=port: _ready(p, n), 15, 0.1, "storescp accepting")
        if proc.poll() is None:
            break
    assert proc is not None and proc.poll() is None, "storescp did not start"
    try:
        yield port
    finally:
        stop_group(proc)
        log.close()


def test_dcmtk_storescp_refuses_compressed_syntaxes(tmp_path: Path) -> None:
    with storescp(tmp_path) as port:
        r = run_cap(port, **guide_lists())
    assert r.ok, r.message
    # storescp takes every storage class uncompressed, no JPEG / JPEG 2000 by default
    assert r.facts.accepted == 5
    assert r.warning is not None and r.warning.startswith("10 of 15 presentation contexts refused")
    assert "JPEG 2000 Image Compression (Lossless Only)" in r.warning
    assert "Implicit VR Little Endian" not in r.warning


def test_agent_probe_once_passes(tmp_path: Path) -> None:
    with acceptor({s: GUIDE_TS for s in GUIDE_SOPS}) as port:
        cfg = tmp_path / "cap.json"
        cfg.write_text(json.dumps({"targets": [cap_target(port, **guide_lists())]}))
        r = run_agent("probe", "--once", "--config", str(cfg), "--output", "json")
    assert r.returncode == 0, r.stdout + r.stderr
    [t] = json.loads(r.stdout)["targets"]
    [check] = t["checks"]
    assert check["name"] == "dicom_capabilities" and check["status"] == "PASS"
    assert check["message"] == "all 15 presentation contexts accepted"
