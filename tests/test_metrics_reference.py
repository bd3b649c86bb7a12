"""The metrics catalogue (agent/metrics_catalogue.py) is the metrics contract: a running agent's
/metrics and the catalogue must agree in both directions (names, types, label names, HELP), and
the tables of docs/metrics.md and docs/otlp.md must be the ones generated from it.

The agent (AgentService, the daemon) probes a SimulatedPACS, an HTTPS API with a trustme
certificate (so the TLS expiry families exist) and a DICOM port with nothing listening (so the
failure families exist), on a short interval; /metrics is scraped over HTTP.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from agent.config import load_config_text
from agent.metrics_catalogue import FAMILIES, family
from agent.metrics_doc import PAGES, blocks, generate
from agent.redaction import Redactor
from agent.service import AgentService
from agent.shard import Shard
from agent.simulator import SimulatedPACS
from tests.helpers import wait_until
from tests.helpers.config import target
from tests.helpers.http_servers import HTTPPeer, Route
from tests.helpers.ports import refused_port
from tests.helpers.tls import TLSMaterial

# Label names a family's samples carry besides the documented ones.
IMPLICIT_LABELS = {"histogram": {"le"}, "summary": set(), "counter": set(), "gauge": set()}


def documented() -> dict[str, tuple[str, set[str]]]:
    """name → (type, label names) of every family a complete scrape shows, from the catalogue
    (the conditional ones exist only once there is something to count, the opt-in ones only
    with their setting: tests/test_series_budget.py checks those)."""
    return {
        f.name: (f.kind, set(f.labels))
        for f in FAMILIES
        if f.section not in ("conditional", "opt-in")
    }


def test_docs_tables_are_generated_from_the_catalogue() -> None:
    for page in PAGES:
        text = page.read_text()
        assert blocks(text), f"{page}: no generated table markers"
    assert not generate(check=True), "docs out of date: run python -m agent.metrics_doc"


def family_name(name: str, kind: str) -> str:
    """The parser's family name: prometheus_client strips `_total` off counters."""
    return name.removesuffix("_total") if kind == "counter" else name


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tls = TLSMaterial(Path(tmp_path_factory.mktemp("metrics-tls")))
    leaf = tls.good()
    with SimulatedPACS() as sim, refused_port() as dead, \
            HTTPPeer({"/health": Route()}, ssl_context=leaf.server_context()) as https:
        targets = [
            # a latency SLO, so pacs_probe_slow_runs_total exists too
            {**sim.endpoint_config("sim", interval_ms=1000),
             "slo": {"latency": {"threshold": "2s", "objective": 95}}},
            target("tls-api", only=("api_ping",), timeout_ms=1000, interval_ms=1000,
                   config={"tls": {"caFile": str(tls.ca_file)}},
                   sectra={"apiEndpoint": https.base_url, "healthCheckEndpoint": "/health"}),
            target("down", port=dead, only=("dicom_echo",), timeout_ms=1000,
                   interval_ms=1000),
            # Verification accepted, JPEG 2000 refused: pacs_dicom_context_accepted 1 and 0
            target("caps", port=sim.dicom_port, only=("dicom_capabilities",), timeout_ms=1000,
                   interval_ms=1000,
                   probes={"dicom_capabilities": {"sopClasses": ["1.2.840.10008.1.1"],
                                                  "transferSyntaxes": ["IMPLICIT", "JPEG2000"]}}),
        ]
        doc = {"targets": targets,
               "agent": {"listen": "127.0.0.1:0", "selfProbe": {"interval": 500}}}
        loaded = load_config_text(json.dumps(doc), "<metrics-test>", {})
        svc = AgentService(loaded, shard=Shard(0, 1), redactor=Redactor())
        svc.start()
        try:
            host, port = svc.address
            url = f"http://{host}:{port}/metrics"
            expected = {(t.id, p) for t in svc.plans for p in t.probes}

            def all_ran() -> str | None:
                text = httpx.get(url, timeout=5).text
                ran = {
                    (s.labels["target"], s.labels["probe"])
                    for f in text_string_to_metric_families(text) for s in f.samples
                    if s.name == "pacs_probe_runs_total" and s.value > 0
                }
                self_probed = re.search(
                    r"^pacs_agent_self_probe_overhead_seconds ([0-9.e+-]+)$", text, re.M)
                ok = expected <= ran and self_probed and float(self_probed.group(1)) > 0
                return text if ok else None

            text = wait_until(all_ran, 20, 0.2, "every probe ran once and the self-probe reported")
        finally:
            svc.stop()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    yield {"text": text, "families": families, "leaf": leaf}


def test_every_documented_family_is_exposed(scraped: dict[str, Any]) -> None:
    families = scraped["families"]
    missing = []
    for name, (kind, _) in documented().items():
        fam = families.get(family_name(name, kind))
        if fam is None or not fam.samples:
            missing.append(name)
    assert not missing, f"in the catalogue but not in /metrics: {missing}"


def test_every_exposed_family_is_documented(scraped: dict[str, Any]) -> None:
    doc = {family_name(n, k) for n, (k, _) in documented().items()}
    ours = [n for n in scraped["families"] if n.startswith(("pacs_", "probe_"))]
    assert ours, "no pacs_/probe_ families at all"
    undocumented = sorted(set(ours) - doc)
    assert not undocumented, f"in /metrics but not in the catalogue: {undocumented}"


def test_types_and_label_names_match_the_table(scraped: dict[str, Any]) -> None:
    families = scraped["families"]
    problems = []
    for name, (kind, labels) in documented().items():
        fam = families[family_name(name, kind)]
        if fam.type != kind:
            problems.append(f"{name}: documented {kind}, exposed {fam.type}")
        seen: set[str] = set()
        for s in fam.samples:
            seen |= set(s.labels)
        seen -= IMPLICIT_LABELS.get(kind, set())
        if seen != labels:
            problems.append(f"{name}: documented labels {sorted(labels)}, exposed {sorted(seen)}")
        if fam.documentation != family(name).help:
            problems.append(f"{name}: HELP {fam.documentation!r}, catalogue {family(name).help!r}")
    assert not problems, "\n".join(problems)


def _samples(scraped: dict[str, Any], family: str, **labels: str) -> list[Sample]:
    return [s for s in scraped["families"][family].samples
            if all(s.labels.get(k) == v for k, v in labels.items())]


def test_conditional_families_carry_real_values(scraped: dict[str, Any]) -> None:
    leaf = scraped["leaf"]
    for fam in ("probe_ssl_earliest_cert_expiry", "pacs_tls_cert_not_after_timestamp_seconds"):
        [s] = _samples(scraped, fam, target="tls-api", probe="api_ping")
        assert s.value == leaf.not_after
    active = {s.labels["endpoint"]: s.value
              for s in _samples(scraped, "pacs_failover_active", target="sim")}
    assert active == {"primary": 1.0, "secondary": 0.0}
    refused = _samples(scraped, "pacs_probe_failures", target="down", probe="dicom_echo",
                       reason="refused")
    assert refused and refused[0].value >= 1
    [oor] = _samples(scraped, "pacs_latency_out_of_range", target="sim", probe="dicom_echo")
    assert oor.value == 0.0
    [otlp] = scraped["families"]["pacs_otlp_export_failures"].samples
    accepted = {s.labels["transfer_syntax"]: s.value
                for s in _samples(scraped, "pacs_dicom_context_accepted", target="caps",
                                  sop_class="1.2.840.10008.1.1")}
    assert accepted == {"1.2.840.10008.1.2": 1.0, "1.2.840.10008.1.2.4.91": 0.0}
    assert otlp.value == 0.0


def test_labels_are_bounded(scraped: dict[str, Any]) -> None:
    """No label value is free text: only target ids and values from fixed sets."""
    fixed = {
        "probe": {"dicom_echo", "dicom_find", "api_ping", "viewer", "failover",
                  "dicom_capabilities"},
        "result": {"success", "failure"},
        "status": {"PASS", "WARN", "FAIL"},
        "state": {"HEALTHY", "DEGRADED", "UNHEALTHY", "UNKNOWN"},
        "endpoint": {"primary", "secondary"},
        "quantile": {"0.5", "0.95", "0.99"},
        "reason": {"dns", "refused", "connect_timeout", "tls", "rejected", "aborted", "timeout",
                   "dimse_status", "http_status", "invalid_response", "unexpected_result",
                   "error"},
        "target": {"sim", "tls-api", "down", "caps"},
    }
    for name, fam in scraped["families"].items():
        if not name.startswith(("pacs_", "probe_")):
            continue
        for s in fam.samples:
            for k, v in s.labels.items():
                if k in fixed:
                    assert v in fixed[k], f"{s.name}: {k}={v!r}"
                elif k == "phase":
                    assert re.fullmatch(r"[a-z_]+", v), f"{s.name}: phase={v!r}"
    assert "SIMULATED^" not in scraped["text"] and "CANARY001" not in scraped["text"]
