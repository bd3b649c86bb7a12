"""OTLP export against real receivers on loopback: a gRPC MetricsService built from
opentelemetry-proto and an HTTP /v1/metrics endpoint, with AgentService probing SimulatedPACS."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from agent import __version__
from agent.config import load_config_text
from agent.config.schema import OTLPConfig
from agent.evaluator import CheckStatus
from agent.health_json import HealthJsonExporter
from agent.observation import Maintenance, SelfProbeOverhead
from agent.otlp import (
    CARDINALITY_LIMIT,
    INSTRUMENTS,
    FailureLog,
    OTLPExporter,
    OTLPSetupError,
    build_resource,
    resolve_settings,
)
from agent.prometheus_exporter import PrometheusExporter
from agent.redaction import Redactor
from agent.service import AgentService
from agent.shard import Shard
from agent.simulator import SimulatedPACS
from agent.slo import ProbeObjectives
from probes.base import Facts, ProbeResult, Reason, TLSInfo
from tests.helpers import bind_retry, wait_until
from tests.helpers.observe import info, observation
from tests.helpers.otlp_receiver import GrpcReceiver, HttpReceiver, Point
from tests.helpers.otlp_receiver import points as otlp_points

ROOT = Path(__file__).resolve().parents[1]
PROBES = {"dicom_echo", "dicom_find", "api_ping", "viewer", "failover"}
CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE in the proto


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* / K8S_* from the surrounding environment leaks into a test."""
    import os

    for k in list(os.environ):
        if k.startswith(("OTEL_", "K8S_")):
            monkeypatch.delenv(k)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedPACS]:
    with SimulatedPACS() as s:
        yield s


# -- helpers -------------------------------------------------------------------------------------


@contextmanager
def agent(
    targets: list[dict], agent_cfg: dict | None = None, env: dict[str, str] | None = None
) -> Iterator[AgentService]:
    """An AgentService on a free loopback port; stopped at the end unless the test stopped it."""
    doc = {"targets": targets, "agent": {"listen": "127.0.0.1:0", **(agent_cfg or {})}}
    loaded = load_config_text(json.dumps(doc), "<test>", env or {})
    svc = AgentService(loaded, shard=Shard(0, 1), redactor=Redactor(loaded.secrets))
    svc.start()
    try:
        yield svc
    finally:
        if svc.ready:
            svc.stop()


def scrape(svc: AgentService) -> dict[tuple[str, tuple], float]:
    host, port = svc.address
    text = httpx.get(f"http://{host}:{port}/metrics", timeout=5).text
    return parse_prom(text)


def parse_prom(text: str | bytes) -> dict[tuple[str, tuple], float]:
    if isinstance(text, bytes):
        text = text.decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def by_name(pts: list[Point]) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for p in pts:
        out.setdefault(p.name, []).append(p)
    return out


def otlp_cfg(endpoint: str, protocol: str = "grpc", interval: int = 500, **kw: Any) -> dict:
    return {"endpoint": endpoint, "protocol": protocol, "interval": interval, **kw}


def result(
    target: str, probe: str = "dicom_echo", ok: bool = True, duration: float = 0.004, **kw: Any
) -> ProbeResult:
    phases = kw.pop(
        "phases", {"connect": 0.001, "associate": 0.001, "dimse": 0.0015, "release": 0.0005}
    )
    return ProbeResult(
        target,
        probe,
        ok,
        None if ok else Reason.REFUSED,
        "msg",
        phases,
        duration,
        ProbeResult.now(),
        **kw,
    )


def otlp_exporter(
    rx: GrpcReceiver | HttpReceiver, protocol: str = "grpc", **cfg: Any
) -> OTLPExporter:
    s = resolve_settings(
        OTLPConfig(**{"endpoint": rx.endpoint, "protocol": protocol, "interval": 60000, **cfg}), {}
    )
    assert s is not None
    return OTLPExporter(s)


def points_of(rec: Any) -> list[Point]:
    return list(otlp_points([rec]))


def threads_named(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == name)


# -- settings: off unless configured, config over env over defaults ------------------------------


def test_off_unless_configured() -> None:
    assert resolve_settings(OTLPConfig(), {}) is None
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
    assert resolve_settings(OTLPConfig(), env) is not None
    assert resolve_settings(OTLPConfig(), {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "x:4317"})
    # explicit off beats the environment
    assert resolve_settings(OTLPConfig(enabled=False), env) is None
    assert resolve_settings(OTLPConfig(enabled=False, endpoint="http://c:4317"), env) is None
    assert resolve_settings(OTLPConfig(), {**env, "OTEL_SDK_DISABLED": "true"}) is None
    assert resolve_settings(OTLPConfig(), {**env, "OTEL_METRICS_EXPORTER": "none"}) is None
    # explicit on without an endpoint: the OTLP default, because it was asked for
    on = resolve_settings(OTLPConfig(enabled=True), {})
    assert on is not None and on.endpoint == "http://localhost:4317" and on.protocol == "grpc"
    # other OTEL_* variables alone do not switch it on
    assert (
        resolve_settings(
            OTLPConfig(),
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_METRIC_EXPORT_INTERVAL": "1000"},
        )
        is None
    )


def test_settings_precedence_and_env_parsing() -> None:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20env,X-Tenant=a",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "X-Scope=metrics",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "7000",
        "OTEL_METRIC_EXPORT_INTERVAL": "15000",
        "OTEL_EXPORTER_OTLP_CERTIFICATE": "/etc/ca.pem",
    }
    s = resolve_settings(OTLPConfig(), env)
    assert s is not None
    assert s.endpoint == "http://base:4318/v1/metrics"  # base URL + signal path
    assert s.protocol == "http/protobuf"
    assert s.headers == {"x-scope": "metrics"}  # the signal-specific variable wins
    assert (s.interval, s.timeout) == (15.0, 7.0)  # env values are milliseconds
    assert s.certificate == "/etc/ca.pem"
    signal = {**env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://sig:9999/custom"}
    assert resolve_settings(OTLPConfig(), signal).endpoint == "http://sig:9999/custom"
    # config beats env; header keys lower-cased (gRPC metadata must be); timeout <= interval
    cfg = OTLPConfig(
        endpoint="http://cfg:4317",
        protocol="grpc",
        interval=2000,
        timeout=9000,
        headers={"Authorization": "Bearer cfg"},
    )
    s = resolve_settings(cfg, {**env, "OTEL_EXPORTER_OTLP_METRICS_HEADERS": ""})
    assert (s.endpoint, s.protocol) == ("http://cfg:4317", "grpc")
    assert s.headers == {"authorization": "Bearer cfg", "x-tenant": "a"}
    assert (s.interval, s.timeout) == (2.0, 2.0)
    http = resolve_settings(OTLPConfig(endpoint="http://c:4318/", protocol="http/protobuf"), {})
    assert http.endpoint == "http://c:4318/v1/metrics"
    with pytest.raises(OTLPSetupError, match="not supported"):
        resolve_settings(OTLPConfig(), {**env, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    with pytest.raises(OTLPSetupError, match="OTEL_METRIC_EXPORT_INTERVAL"):
        resolve_settings(OTLPConfig(), {**env, "OTEL_METRIC_EXPORT_INTERVAL": "soon"})


def test_resource_attributes_and_precedence() -> None:
    env = {"K8S_POD_NAME": "pod-1", "K8S_NAMESPACE_NAME": "pacs", "K8S_NODE_NAME": "node-a"}
    r = build_resource("1/3", env).attributes
    assert r["service.name"] == "pacs-health-agent"
    assert r["service.version"] == __version__
    again = build_resource(None, {}).attributes
    assert r["service.instance.id"] and r["service.instance.id"] == again["service.instance.id"]
    assert (r["k8s.pod.name"], r["k8s.namespace.name"], r["k8s.node.name"]) == (
        "pod-1",
        "pacs",
        "node-a",
    )
    assert r["pacs.agent.shard"] == "1/3"
    assert r["telemetry.sdk.language"] == "python"
    env2 = {
        **env,
        "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=pod-1,site=hospital%20a,"
        "service.name=from-attrs",
        "OTEL_SERVICE_NAME": "custom",
    }
    r2 = build_resource(None, env2).attributes
    assert r2["service.instance.id"] == "pod-1"  # the operator's variables win over our default
    assert r2["site"] == "hospital a"
    assert r2["service.name"] == "custom"  # OTEL_SERVICE_NAME beats OTEL_RESOURCE_ATTRIBUTES
    assert "k8s.pod.name" not in build_resource(None, {}).attributes


def test_failure_log_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    fl = FailureLog("http://c:4317", clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="agent.otlp")
    assert fl.failure("UNAVAILABLE") is True
    for _ in range(10):
        now[0] += 5
        assert fl.failure("UNAVAILABLE") is False
    now[0] += 11  # 61 s after the first line
    assert fl.failure("UNAVAILABLE") is True
    assert fl.success() is True
    assert fl.success() is False  # "resumed" once
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.otlp"]
    assert len(lines) == 3
    assert "(1 failed export(s)" in lines[0] and "(11 failed export(s)" in lines[1]
    assert "resumed" in lines[2]


def test_names_follow_our_restatement_of_the_collector_translation() -> None:
    """Each OTLP name, put through translate() below, is its /metrics name, and that name exists.

    translate() is this test's own restatement of the Collector's Prometheus naming (dots to
    underscores, a unit suffix, `_total` on counters), not the Collector itself: it checks the
    OTLP and Prometheus names are consistent by that rule, not what a given Collector emits.
    """

    def translate(name: str, unit: str, kind: str) -> str:
        out = name.replace(".", "_")
        suffix = {"s": "seconds"}.get(unit, "")  # "{...}" annotations add nothing
        if unit == "1" and kind == "gauge":
            suffix = "ratio"
        if suffix and not out.endswith("_" + suffix):
            out += "_" + suffix
        return out + ("_total" if kind == "counter" else "")

    # the full set: pacs.probe.duration's /metrics name exists only with the classic histogram
    prom = PrometheusExporter(classic_histogram=True)
    # with objectives, so the SLO families exist too
    prom.add_target(info(
        "t", ["failover", "dicom_echo", "dicom_capabilities"],
        {"failover": ProbeObjectives(0.999, 0.95, 1.0)},
        declared={"failover": Facts(endpoints_up={"primary": False, "secondary": False})},
    ))
    r = result("t", "failover", tls=TLSInfo(2e9, 1.9e9), facts=Facts(active_endpoint="primary"))
    prom.observe(observation(r, {0.5: 0.1}, out_of_range=1))
    prom.observe(observation(result("t", "failover", ok=False), {0.5: 0.1}))
    # the families that exist only after a DICOM status or a capabilities run
    prom.observe(observation(
        result("t", "dicom_echo", ok=False, facts=Facts(dicom_status="RJ-1-1-7"))
    ))
    prom.observe(observation(result(
            "t",
            "dicom_capabilities",
            facts=Facts(contexts=(("1.2.840.10008.1.1", "1.2.840.10008.1.2", True),)),
        ), {}))
    prom.event(SelfProbeOverhead(0.001))
    prom.event(Maintenance({"t": False}))
    samples = parse_prom(prom.render())
    names = {n for n, _ in samples}
    for spec in INSTRUMENTS:
        got = translate(spec.name, spec.unit, spec.kind)
        assert got == spec.prometheus, spec
        if spec.kind == "histogram":
            assert got + "_count" in names or got in names, spec
        else:
            assert got in names, spec
    docs = (ROOT / "docs" / "otlp.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_.]+)` \|[^|]*\|[^|]*\|[^|]*\| `([a-z_]+)`", docs, re.M))
    assert rows == {s.name: s.prometheus for s in INSTRUMENTS}


# -- the agent, end to end -----------------------------------------------------------------------


def test_no_otlp_exporter_without_config_or_env(sim: SimulatedPACS) -> None:
    before = threads_named("otlp-export")
    with agent([sim.endpoint_config(interval_ms=1000)]) as svc:
        assert svc.otlp is None
        assert [type(e) for e in svc.pipeline.exporters] == [PrometheusExporter, HealthJsonExporter]
        assert threads_named("otlp-export") == before


def test_enabled_false_wins_over_env_and_bad_settings_only_disable_otlp(
    sim: SimulatedPACS,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    with agent([sim.endpoint_config(interval_ms=1000)], {"otlp": {"enabled": False}}) as svc:
        assert svc.otlp is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with agent([sim.endpoint_config(interval_ms=1000)]) as svc:
        assert svc.otlp is None
        assert svc.ready
        assert any(
            "OTLP export disabled" in r.getMessage() and "http/json" in r.getMessage()
            for r in caplog.records
        )


def _check_export(rx: GrpcReceiver | HttpReceiver, svc: AgentService) -> dict[str, list[Point]]:
    """Wait until the latest export shows every probe run, then check types, units, points."""

    def complete() -> dict[str, list[Point]] | None:
        latest = {
            name: rx.latest(name)
            for name in (
                "pacs.probe.duration",
                "pacs.probe.runs",
                "pacs.target.health",
                "pacs.agent.self_probe.overhead",
                "pacs.failover.active",
                "pacs.probe.phase.duration",
            )
        }
        if not all(latest.values()):
            return None
        hist = {p.attributes["probe"] for p in latest["pacs.probe.duration"] if p.point.count > 0}
        healthy = [
            p
            for p in latest["pacs.target.health"]
            if p.attributes["state"] == "HEALTHY" and p.value == 1
        ]
        return latest if hist == PROBES and healthy else None

    wait_until(complete, 25, 0.1, "a complete export")
    last = rx.received[-1]
    m = by_name(rx.points(len(rx.received) - 1))
    res = rx.points()[-1].resource
    assert res["service.name"] in ("pacs-health-agent", "custom-agent")
    assert res["service.version"] == __version__
    assert res["service.instance.id"]
    expected_units = {s.name: s.unit for s in INSTRUMENTS}
    for name, pts in m.items():
        assert name in expected_units, name
        assert pts[0].unit == expected_units[name], name
    # latency: base-2 exponential histograms per target and probe, cumulative
    for p in m["pacs.probe.duration"]:
        dp = p.point
        assert p.kind == "exponential_histogram"
        assert set(p.attributes) == {"target", "probe"}
        assert p.metric.exponential_histogram.aggregation_temporality == CUMULATIVE
        assert dp.count > 0 and dp.sum > 0 and -10 <= dp.scale <= 20
        assert sum(dp.positive.bucket_counts) + dp.zero_count == dp.count
        assert 0 < dp.min <= dp.max < 5
    phase_pts = m["pacs.probe.phase.duration"]
    phases = {(p.attributes["probe"], p.attributes["phase"]) for p in phase_pts}
    assert {("dicom_echo", "associate"), ("dicom_echo", "dimse"), ("dicom_find", "dimse")} <= phases
    assert all(
        p.kind == "exponential_histogram" and p.point.count > 0
        for p in m["pacs.probe.phase.duration"]
    )
    # counters: monotonic cumulative sums with the Prometheus labels
    runs = m["pacs.probe.runs"]
    assert all(p.kind == "sum" and p.metric.sum.is_monotonic for p in runs)
    assert all(p.metric.sum.aggregation_temporality == CUMULATIVE for p in runs)
    assert {
        p.attributes["probe"] for p in runs if p.attributes["result"] == "success" and p.value > 0
    } == PROBES
    assert {frozenset(p.attributes) for p in runs} == {frozenset({"target", "probe", "result"})}
    attempts = {p.attributes["probe"]: p.value for p in m["pacs.probe.attempts"]}
    assert set(attempts) == PROBES and min(attempts.values()) >= 1
    # the exported counts never run ahead of /metrics (same results, exported earlier)
    samples = scrape(svc)
    for p in runs:
        prom = total(
            samples, "pacs_probe_runs_total", **{k: str(v) for k, v in p.attributes.items()}
        )
        assert p.value <= prom
    # states as gauges: enum pattern, exactly one 1 per check / target / agent
    checks = m["pacs.check.status"]
    assert all(p.kind == "gauge" for p in checks)
    for probe in PROBES:
        vals = {p.attributes["status"]: p.value for p in checks if p.attributes["probe"] == probe}
        assert set(vals) == {s.value for s in CheckStatus} and sum(vals.values()) == 1
    agent_states = {p.attributes["state"]: p.value for p in m["pacs.agent.health"]}
    assert agent_states == {"HEALTHY": 1, "DEGRADED": 0, "UNHEALTHY": 0, "UNKNOWN": 0}
    failover = {p.attributes["endpoint"]: p.value for p in m["pacs.failover.active"]}
    assert failover == {"primary": 1, "secondary": 0}
    [overhead] = m["pacs.agent.self_probe.overhead"]
    assert 0 < overhead.value < 1
    [targets] = m["pacs.agent.targets"]
    assert targets.value == 1
    success = {p.attributes["probe"]: p.value for p in m["probe.success"]}
    assert success == dict.fromkeys(PROBES, 1)
    q = {p.attributes["quantile"] for p in m["pacs.probe.latency"]}
    assert q == {"0.5", "0.95", "0.99"}
    assert not any("otel.metric.overflow" in p.attributes for pts in m.values() for p in pts)
    assert last.request.resource_metrics[0].scope_metrics[0].scope.name == "pacs-health-agent"
    return m


def test_grpc_export_end_to_end(sim: SimulatedPACS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K8S_POD_NAME", "pacs-health-agent-0")
    monkeypatch.setenv("K8S_NAMESPACE_NAME", "observability")
    monkeypatch.setenv("K8S_NODE_NAME", "node-7")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=test-cluster,site=hospital-a")
    secret = "tok-otlp-5521-secret"
    cfg = {
        "selfProbe": {"interval": 500},
        "otlp": otlp_cfg("", headers={"Authorization": "Bearer ${OTLP_TOKEN}"}),
    }
    with GrpcReceiver() as rx:
        cfg["otlp"]["endpoint"] = rx.endpoint
        with agent([sim.endpoint_config(interval_ms=1000)], cfg, {"OTLP_TOKEN": secret}) as svc:
            assert svc.otlp is not None and svc.otlp in svc.pipeline.exporters
            _check_export(rx, svc)
            res = rx.points()[-1].resource
            assert res["service.name"] == "pacs-health-agent"
            assert res["k8s.pod.name"] == "pacs-health-agent-0"
            assert res["k8s.namespace.name"] == "observability"
            assert res["k8s.node.name"] == "node-7"
            assert (res["k8s.cluster.name"], res["site"]) == ("test-cluster", "hospital-a")
            assert res["pacs.agent.shard"] == "0/1"
            # the header reached the collector as gRPC metadata, and never /metrics or /health
            assert rx.received[-1].headers.get("authorization") == "Bearer " + secret
            host, port = svc.address
            for path in ("/metrics", "/health"):
                assert secret not in httpx.get(f"http://{host}:{port}{path}", timeout=5).text
            assert total(scrape(svc), "pacs_otlp_export_failures_total") == 0


def test_http_protobuf_export_from_env_only(
    sim: SimulatedPACS, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HttpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "X-Api-Key=k-8812")
        monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "500")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "custom-agent")
        cfg = {"selfProbe": {"interval": 500}}
        with agent([sim.endpoint_config(interval_ms=1000)], cfg) as svc:
            assert svc.otlp is not None and svc.otlp.settings.interval == 0.5
            _check_export(rx, svc)
            rec = rx.received[-1]
            assert rec.path == "/v1/metrics"
            assert rec.headers["content-type"] == "application/x-protobuf"
            assert rec.headers["x-api-key"] == "k-8812"
            assert rx.points()[-1].resource["service.name"] == "custom-agent"
            assert rx.bad_requests == 0


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_outage_counts_failures_and_export_resumes(
    sim: SimulatedPACS,
    protocol: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    receiver = GrpcReceiver if protocol == "grpc" else HttpReceiver
    rx = receiver().start()
    try:
        cfg = {"otlp": otlp_cfg(rx.endpoint, protocol)}
        with agent([sim.endpoint_config(interval_ms=500)], cfg) as svc:
            wait_until(lambda: rx.count() >= 1, 15, 0.05, "a first export")
            port = rx.port
            caplog.clear()
            rx.stop()
            s0 = scrape(svc)
            f0 = total(s0, "pacs_otlp_export_failures_total")
            runs0 = total(s0, "pacs_probe_runs_total")

            def outage_seen() -> bool:
                s = scrape(svc)  # /metrics keeps answering throughout
                return (
                    total(s, "pacs_otlp_export_failures_total") >= f0 + 3
                    and total(s, "pacs_probe_runs_total") >= runs0 + 5
                )

            t0 = time.monotonic()
            wait_until(outage_seen, 20, 0.1, "failed exports counted while probing goes on")
            elapsed = time.monotonic() - t0
            # exports fail fast (bounded by the 500 ms timeout), they do not pile up
            assert elapsed < 12
            host, http_port = svc.address
            r = httpx.get(f"http://{host}:{http_port}/health", timeout=5)
            assert r.json()["status"] == "HEALTHY"
            rx = bind_retry(lambda: receiver(port).start())
            wait_until(lambda: rx.count() >= 2, 20, 0.05, "export resumed on the same port")
            runs = {
                p.attributes["probe"]: p.value
                for p in rx.latest("pacs.probe.runs")
                if p.attributes["result"] == "success"
            }
            assert sum(runs.values()) >= runs0 + 5  # cumulative: nothing lost while down
            wait_until(
                lambda: any(
                    "resumed" in r.getMessage() for r in caplog.records if r.name == "agent.otlp"
                ),
                5,
                0.05,
                "a resumed line",
            )
        ours = [
            r for r in caplog.records if r.name == "agent.otlp" and r.levelno >= logging.WARNING
        ]
        assert len(ours) == 1, [r.getMessage() for r in ours]  # at most once a minute
        assert f"127.0.0.1:{port}" in ours[0].getMessage()
        sdk = [
            r
            for r in caplog.records
            if r.name.startswith("opentelemetry") and r.levelno >= logging.WARNING
        ]
        assert sdk == []  # the SDK's per-attempt errors are folded into our line
    finally:
        rx.stop()


def test_stop_does_a_final_bounded_flush(sim: SimulatedPACS) -> None:
    with GrpcReceiver() as rx:
        cfg = {"otlp": otlp_cfg(rx.endpoint, interval=60000, timeout=2000)}
        with agent([sim.endpoint_config(interval_ms=1000)], cfg) as svc:
            wait_until(
                lambda: total(scrape(svc), "pacs_probe_runs_total", result="success") >= 5,
                15,
                0.05,
                "some runs",
            )
            seen = total(scrape(svc), "pacs_probe_runs_total")
            assert rx.count() == 0  # the 60 s interval has not come round
            t0 = time.monotonic()
            svc.stop()
            took = time.monotonic() - t0
        assert took < svc.otlp.final_flush_bound + 2
        assert rx.count() >= 1
        runs = sum(p.value for p in rx.latest("pacs.probe.runs"))
        assert runs >= seen


def test_stop_is_bounded_when_the_collector_hangs(sim: SimulatedPACS) -> None:
    with GrpcReceiver() as rx:
        rx.hang.set()
        cfg = {"otlp": otlp_cfg(rx.endpoint, interval=60000, timeout=1000)}
        with agent([sim.endpoint_config(interval_ms=1000)], cfg) as svc:
            wait_until(lambda: total(scrape(svc), "pacs_probe_runs_total") >= 1, 15, 0.05)
            t0 = time.monotonic()
            svc.stop()
            took = time.monotonic() - t0
        assert svc.otlp.final_flush_bound == 3.0
        assert took < 3.0 + 2  # one request timeout, margins, and the rest of stop()
        failures = total(parse_prom(svc.prometheus.render()), "pacs_otlp_export_failures_total")
        assert failures == 1


# -- scale and TLS -------------------------------------------------------------------------------


def test_cardinality_above_the_sdk_default_is_kept() -> None:
    """420 targets x 5 probes: 4,200 runs series and 2,100 histogram series, over the SDK's
    default 2,000 per instrument, all exported and none folded into an overflow point."""
    assert CARDINALITY_LIMIT >= 60_000
    with GrpcReceiver() as rx:
        ex = otlp_exporter(rx)
        probes = sorted(PROBES)
        for i in range(420):
            ex.add_target(info(f"t{i:04d}", probes))
            for p in probes:
                ex.observe(observation(result(f"t{i:04d}", p, phases={"dimse": 0.002})))
        # force_flush collects and exports on this thread, with no shutdown deadline to race
        # on a loaded machine
        ex.force_flush()
        received = rx.received
        ex.shutdown()
        m = by_name([p for r in received for p in points_of(r)])
        assert len(m["pacs.probe.runs"]) == 4200
        assert len(m["pacs.probe.duration"]) == 2100
        assert len(m["pacs.probe.phase.duration"]) == 2100
        assert len(m["pacs.check.status"]) == 6300
        assert not any("otel.metric.overflow" in p.attributes for pts in m.values() for p in pts)
        # split into requests of at most 2,000 points (a collector takes 4 MiB messages)
        assert len(received) >= 10
        assert all(len(points_of(r)) <= 2000 for r in received)


def test_grpc_tls_with_configured_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    key = leaf.private_key_pem.bytes()
    chain = b"".join(p.bytes() for p in leaf.cert_chain_pems)
    with GrpcReceiver(tls=(key, chain)) as rx:
        ex = otlp_exporter(rx, certificate=str(ca_file))
        ex.add_target(info("tls-target", ["dicom_echo"]))
        ex.observe(observation(result("tls-target")))
        ex.shutdown()
        assert rx.count() == 1
        assert ex.exporter.failures == 0
        assert [p.point.count for p in rx.latest("pacs.probe.duration")] == [1]
        # without the CA the handshake fails and the failure is counted, not raised
        other = otlp_exporter(rx, timeout=1000)
        failed: list[int] = []
        other.exporter.on_failure = lambda: failed.append(1)
        other.shutdown()
        assert failed == [1] and rx.count() == 1


def test_unreadable_certificate_is_a_setup_error(tmp_path: Path) -> None:
    with GrpcReceiver() as rx, pytest.raises(OTLPSetupError, match="certificate"):
        otlp_exporter(
            rx, certificate=str(tmp_path / "missing.pem"), endpoint=f"https://127.0.0.1:{rx.port}"
        )


def test_first_failed_batch_ends_the_export() -> None:
    """A collector that refuses the first request is not sent the other batches."""
    with GrpcReceiver() as rx:
        rx.reject = True
        ex = otlp_exporter(rx)
        failed: list[int] = []
        ex.exporter.on_failure = lambda: failed.append(1)
        for i in range(600):  # 6,000 runs series: at least 5 batches of 2,000
            ex.add_target(info(f"t{i:04d}", sorted(PROBES)))
        ex.shutdown()
        assert (rx.attempts, rx.count(), failed) == (1, 0, [1])


def test_slow_collector_export_is_bounded_by_the_interval() -> None:
    with GrpcReceiver() as rx:
        rx.delay = 0.4  # each request answered, but late
        ex = otlp_exporter(rx, interval=1000)  # budget 1 s per export, 1 s per request
        for i in range(600):  # ~11,000 points: 6 batches, 2.4 s if all were sent
            ex.add_target(info(f"t{i:04d}", sorted(PROBES)))
        wait_until(lambda: ex.exporter.failures >= 1, 15, 0.02, "an export cut short")
        # the export stopped starting requests at its 1 s budget, long before its 6th batch
        assert ex.exporter.exports == 1 and 1 <= ex.exporter.requests <= 4
        t0 = time.monotonic()
        ex.shutdown()
        assert time.monotonic() - t0 < ex.final_flush_bound + 1


def test_removed_target_stops_reporting_gauges() -> None:
    with GrpcReceiver() as rx:
        ex = otlp_exporter(rx)
        for t in ("keep", "gone"):
            ex.add_target(info(t, ["dicom_echo"]))
            ex.observe(observation(result(t), {0.5: 0.004}))
        ex.remove_target("gone")
        ex.observe(observation(result("gone")))  # a run that was in flight during the reload
        ex.shutdown()
        m = by_name(rx.points())
        for name in (
            "pacs.check.status",
            "pacs.target.health",
            "probe.success",
            "pacs.probe.latency",
        ):
            assert {p.attributes["target"] for p in m[name]} == {"keep"}, name
        assert [p.value for p in m["pacs.agent.targets"]] == [1]
        runs = {
            p.attributes["target"]: p.value
            for p in m["pacs.probe.runs"]
            if p.attributes["result"] == "success"
        }
        assert runs == {"keep": 1, "gone": 1}  # the SDK cannot delete a series; no new counts


def test_endpoint_credentials_stay_out_of_the_log() -> None:
    from agent.otlp import display_url

    assert display_url("https://user:pw-123@collector:4318/v1/metrics") == (
        "https://collector:4318/v1/metrics"
    )
    assert display_url("collector:4317") == "collector:4317"
