"""Exporters and renderers read result fields, never a probe's name.

A failover node or a proposed presentation context is a series because a run reported it
(`Facts.endpoints_up`, `Facts.contexts`) or because the probe declared it when its target was
installed (`TargetInfo.declared`, from the plan): a failed run that reports none leaves the
configured nodes / pairs at 0, from the first run on, and a probe under another name that
reports the same facts gets the same series.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from agent.config.schema import OTLPConfig
from agent.evaluator import CheckState, CheckStatus, HealthState, TargetState, Thresholds
from agent.otlp import OTLPExporter, resolve_settings
from agent.pipeline import target_info
from agent.prometheus_exporter import PrometheusExporter
from agent.status_page import render as status_page
from agent.targets import PROBE_ORDER
from probes.base import Facts, ProbeResult, Reason
from tests.helpers.config import plan, target
from tests.helpers.observe import info, observation
from tests.helpers.otlp_receiver import GrpcReceiver

ROOT = Path(__file__).resolve().parents[1]
EXPORTERS = [
    ROOT / "agent" / name
    for name in ("prometheus_exporter.py", "prometheus_series.py", "health_json.py",
                 "status_page.py", "observation.py", "pipeline.py")
] + sorted((ROOT / "agent" / "otlp").glob("*.py"))
NODES3 = {"primary": False, "secondary": False, "secondary2": False}


def failed(target_id: str, probe: str) -> ProbeResult:
    # a run that raised before reporting anything: no facts at all
    return ProbeResult(target_id, probe, False, Reason.REFUSED, "refused", {}, 0.001,
                       ProbeResult.now())


def series(ex: PrometheusExporter, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    fams = {f.name: f for f in text_string_to_metric_families(ex.render().decode())}
    fam = fams.get(family)
    return {tuple(sorted(s.labels.items())): s.value for s in fam.samples} if fam else {}


def three_node_plan() -> object:
    return plan(target("fo", only=("failover",), config={"secondaryHosts": [
        {"host": "127.0.0.1", "port": 11113, "calledAET": "B"},
        {"host": "127.0.0.1", "port": 11114, "calledAET": "C"},
    ]}))


def test_no_exporter_or_renderer_module_names_a_probe() -> None:
    names = set(PROBE_ORDER)
    found = []
    for path in EXPORTERS:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "\n".join(found)


def test_a_failed_first_run_exports_every_configured_node_at_0() -> None:
    p = three_node_plan()
    ti = target_info(p)  # type: ignore[arg-type]
    assert ti.declared["failover"].endpoints_up == NODES3
    ex = PrometheusExporter()
    ex.add_target(ti)
    ex.observe(observation(failed("fo", "failover"), target_state=HealthState.UNHEALTHY))
    for family in ("pacs_failover_active", "pacs_failover_endpoint_up"):
        got = {dict(k)["endpoint"]: v for k, v in series(ex, family).items()}
        assert got == {"primary": 0.0, "secondary": 0.0, "secondary2": 0.0}, family


def test_the_same_facts_under_another_probe_name_make_the_same_series() -> None:
    ex = PrometheusExporter()
    ex.add_target(info("t", ["site_switch", "pair_check"]))
    up = {"north": False, "south": True}
    ex.observe(observation(ProbeResult(
        "t", "site_switch", True, None, "ok", {}, 0.01, ProbeResult.now(),
        facts=Facts(active_endpoint="south", endpoints_up=up))))
    ex.observe(observation(ProbeResult(
        "t", "pair_check", True, None, "ok", {}, 0.01, ProbeResult.now(),
        facts=Facts(contexts=(("1.2.3", "1.2.840.10008.1.2", True),)))))
    active = {dict(k)["endpoint"]: v for k, v in series(ex, "pacs_failover_active").items()}
    assert active == {"north": 0.0, "south": 1.0}
    assert list(series(ex, "pacs_dicom_context_accepted").values()) == [1.0]


def test_a_failed_first_capabilities_run_exports_every_configured_pair_at_0() -> None:
    p = plan(target("caps", only=("dicom_capabilities",), probes={"dicom_capabilities": {
        "sopClasses": ["1.2.840.10008.1.1"], "transferSyntaxes": ["IMPLICIT", "JPEG2000"]}}))
    ex = PrometheusExporter()
    ex.add_target(target_info(p))
    ex.observe(observation(failed("caps", "dicom_capabilities")))
    got = {dict(k)["transfer_syntax"]: v
           for k, v in series(ex, "pacs_dicom_context_accepted").items()}
    assert got == {"1.2.840.10008.1.2": 0.0, "1.2.840.10008.1.2.4.91": 0.0}


def test_otlp_exports_the_declared_nodes_of_a_failed_run() -> None:
    with GrpcReceiver() as rx:
        s = resolve_settings(OTLPConfig(endpoint=rx.endpoint, protocol="grpc", interval=60000), {})
        assert s is not None
        ox = OTLPExporter(s)
        ox.add_target(target_info(three_node_plan()))  # type: ignore[arg-type]
        ox.observe(observation(failed("fo", "failover")))
        ox.shutdown()
        pts = [pt for pt in rx.points() if pt.name == "pacs.failover.endpoint.up"]
    assert {pt.attributes["endpoint"]: pt.value for pt in pts} == dict.fromkeys(NODES3, 0)


def test_status_page_reads_the_serving_node_from_facts() -> None:
    now = datetime.now(UTC)
    r_ok = ProbeResult("t", "site_switch", True, None, "ok", {}, 0.01, now,
                       facts=Facts(active_endpoint="south", endpoints_up={"south": True}))
    ok = TargetState("t", "T", Thresholds(), {"site_switch": CheckState(
        "site_switch", CheckStatus.PASS, last=r_ok)}, HealthState.HEALTHY)
    down = TargetState("fo", "FO", Thresholds(), {"failover": CheckState(
        "failover", CheckStatus.FAIL, last=failed("fo", "failover"))}, HealthState.UNHEALTHY)
    declared = {"fo": target_info(three_node_plan()).declared}  # type: ignore[arg-type]
    html = status_page([ok, down], lambda t, p: [], now=now, declared=declared).decode()
    assert "Failover: running on south" in html
    assert "Failover: no endpoint answering" in html
