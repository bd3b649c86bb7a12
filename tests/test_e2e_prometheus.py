"""End to end: a real Prometheus scrapes the agent, which probes the simulator; the shipped
rules load, every dashboard query returns data, and failing the PACS activates the alerts."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from agent.simulator import SimulatedPACS
from tests.helpers.agent_fixtures import running_agent
from tests.helpers.promserver import PromServer
from tests.test_dashboards import EXPRESSIONS, GRAFANA_BUILTINS, substitute

ROOT = Path(__file__).resolve().parents[1]
RULES = sorted((ROOT / "alerts").glob("*.yml"))
TARGET = "sim-pacs"


def test_rules_dashboards_and_alerts_against_the_real_agent(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with SimulatedPACS(http_ssl_context=server_ctx) as sim:
        # all ten probes, so the imaging-path panels (retrieve, capabilities) have data too
        cfg = sim.endpoint_config(TARGET, interval_ms=500, imaging=True, failureThreshold=2)
        cfg["config"]["tls"] = {"caFile": str(ca_file)}  # HTTPS probes trust the test CA
        # a latency SLO besides the default availability one, so every SLO panel has data
        cfg["slo"] = {"latency": {"threshold": "2s", "objective": 95}}
        # The 30-day group evaluates every 5 m in production; here every second, so its first
        # evaluation falls inside the test. Nothing else in the rules is changed.
        rules = []
        for f in RULES:
            copy = tmp_path / f.name
            copy.write_text(f.read_text().replace("interval: 5m", "interval: 1s"))
            rules.append(copy)
        with running_agent([cfg]) as svc:
            host, port = svc.address
            with PromServer([f"{host}:{port}"], rule_files=rules) as prom:
                prom.wait_for_targets_up(30)
                prom.wait_for(
                    lambda: prom.query(f'probe_ssl_earliest_cert_expiry{{target="{TARGET}"}}'),
                    timeout=30,
                )
                # every dashboard query, variables substituted, has data from the real agent at
                # some point of the run: the healthy PACS's (a retrieve's first_image exists
                # only while retrieves succeed), then the sick one's (failures, secondary)
                values = {
                    "job": "pacs-health-agent",
                    "target": TARGET,
                    "probe": ".*",
                    **GRAFANA_BUILTINS,
                }
                pending = {substitute(e, values): f"{d} {p!r} {r}" for d, p, r, e in EXPRESSIONS}

                def all_have_data() -> bool:
                    # series born with the failure need a second scrape before rate() sees them
                    for q in [q for q in pending if prom.query(q)]:
                        del pending[q]
                    return not pending

                first_image = next(q for q in pending if '"first_image"' in q)
                prom.wait_for(lambda: prom.query(first_image), timeout=30)
                all_have_data()
                # a sick PACS: DICOM answers with failure status, the API runs on its secondary
                sim.faults.dicom_status = 0xC000
                sim.faults.primary_down = True

                def active() -> set[str]:
                    return {
                        a["labels"]["alertname"]
                        for a in prom.alerts()
                        if a["state"] in ("pending", "firing")
                    }

                got = prom.wait_for(
                    lambda: (
                        active() >= {"PacsTargetUnhealthy", "PacsDicomEchoFailing"} and active()
                    ),
                    timeout=40,
                )
                assert "PacsRunningOnSecondary" in got or prom.wait_for(
                    lambda: "PacsRunningOnSecondary" in active(), timeout=20
                )
                try:
                    prom.wait_for(all_have_data, timeout=40)
                except Exception:  # noqa: BLE001 - report which panels, not just "timed out"
                    raise AssertionError(
                        "panels without data:\n"
                        + "\n".join(f"{name}: {q}" for q, name in pending.items())
                    ) from None
                groups = prom.rules()
                assert all(r.get("health") == "ok" for g in groups for r in g["rules"]), groups
