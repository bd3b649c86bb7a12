"""`promtool check metrics` accepts the agent's real /metrics output, and the hand-written
SyntheticAgentMetrics the alert and dashboard tests run on has the real output's shape.

The real agent probes an HTTPS simulator with all ten probes (a test CA: TLS and certificate
families), with its primary down (failover families), plus a target nothing listens on (failure
families).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from agent.simulator import SimulatedPACS
from tests.helpers.agent_fixtures import base_url, running_agent, scrape, total
from tests.helpers.peers import wait_until
from tests.helpers.ports import refused_port
from tests.helpers.promserver import SyntheticAgentMetrics

# families that exist only once something happened that this short run cannot provoke
EVENT_ONLY: set[str] = set()


@pytest.fixture(scope="module")
def real_text(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ca = trustme.CA()
    ca_file = Path(tmp_path_factory.mktemp("ca")) / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    import ssl

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    with SimulatedPACS(http_ssl_context=server_ctx) as sim, refused_port() as dead:
        sim.faults.primary_down = True  # so failover series exist too
        cfg = sim.endpoint_config(interval_ms=500, imaging=True)  # all ten probes' families
        cfg["config"]["tls"] = {"caFile": str(ca_file)}  # the HTTPS probes trust the test CA
        cfg["slo"] = {"latency": {"threshold": 1000, "objective": 99}}  # SLO families too
        down = {
            "id": "down",
            "config": {"host": "127.0.0.1", "port": dead, "timeout": 400},
            "healthCheck": {"interval": 500, "timeout": 400},
        }
        with running_agent([cfg, down]) as svc:

            def ready() -> bool:
                s = scrape(svc)
                return (
                    total(s, "pacs_probe_runs_total", result="failure", target="down") >= 1
                    and total(s, "probe_ssl_earliest_cert_expiry") > 0
                    and total(s, "pacs_failover_active") >= 1
                    and total(s, "pacs_failover_endpoint_up") >= 1
                    and total(s, "pacs_dicom_context_accepted") >= 1
                    and total(s, "pacs_probe_runs_total") >= 8
                )

            wait_until(ready, 15, 0.1, "failure, TLS and failover series")
            yield httpx.get(base_url(svc) + "/metrics", timeout=5).text


def test_promtool_accepts_real_metrics(real_text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test` installs Debian's prometheus package"
    for family in (
        "probe_ssl_earliest_cert_expiry",
        "pacs_tls_cert_not_after_timestamp_seconds",
        "pacs_probe_failures_total",
        "pacs_failover_active",
    ):
        assert f"\n{family}{{" in real_text, f"{family} missing from the checked output"
    r = subprocess.run(
        [promtool, "check", "metrics"], input=real_text, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "# TYPE pacs_probe_latency_seconds summary" in real_text


def shape(text: str) -> dict[str, tuple[str, frozenset[str], frozenset[float]]]:
    """family → (type, label names of its samples, histogram bucket bounds)."""
    out = {}
    for fam in text_string_to_metric_families(text):
        labels: set[str] = set()
        les: set[float] = set()
        for s in fam.samples:
            labels |= set(s.labels) - {"le", "quantile"}
            if s.name.endswith("_bucket"):
                les.add(float(s.labels["le"]))
        out[fam.name] = (fam.type, frozenset(labels), frozenset(les))
    return out


def test_synthetic_metrics_have_the_real_names_labels_and_buckets(real_text: str) -> None:
    real = shape(real_text)
    synthetic = shape(SyntheticAgentMetrics().render())
    missing = sorted(set(synthetic) - set(real) - EVENT_ONLY)
    assert not missing, f"synthetic families the agent does not export: {missing}"
    for name, (kind, labels, les) in synthetic.items():
        if name not in real:
            continue
        rkind, rlabels, rles = real[name]
        assert kind == rkind, (name, kind, rkind)
        assert labels == rlabels, (name, sorted(labels), sorted(rlabels))
        assert les == rles, (name, sorted(les), sorted(rles))
