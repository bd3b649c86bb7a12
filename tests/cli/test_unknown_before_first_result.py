"""Before a target's first result it is UNKNOWN on every surface: pacs_target_health and
pacs_agent_health say so with a 1 (not 0 for every state, which dashboards painted green), and
/health answers 200 with status UNKNOWN and PENDING checks."""

from __future__ import annotations

import httpx

from tests.cli.common import dicom_target
from tests.helpers.agent_fixtures import base_url, running_agent, sample, scrape
from tests.helpers.peers import silent_listener


def test_a_target_without_results_is_unknown() -> None:
    with silent_listener() as port:  # connects, never answers: the first run cannot finish
        target = dicom_target(port, timeout_ms=30000)
        target["healthCheck"]["interval"] = 60000
        with running_agent([target]) as svc:
            s = scrape(svc)
            states = {
                st: sample(s, "pacs_target_health", target="pacs", state=st)
                for st in ("HEALTHY", "DEGRADED", "UNHEALTHY", "UNKNOWN")
            }
            assert states == {"HEALTHY": 0, "DEGRADED": 0, "UNHEALTHY": 0, "UNKNOWN": 1}
            assert sample(s, "pacs_agent_health", state="UNKNOWN") == 1
            assert sample(s, "pacs_agent_health", state="HEALTHY") == 0
            r = httpx.get(base_url(svc) + "/health", timeout=5)
            assert r.status_code == 200
            doc = r.json()
            assert doc["status"] == "UNKNOWN"
            assert doc["targets"][0]["status"] == "UNKNOWN"
            assert {c["status"] for c in doc["targets"][0]["checks"]} == {"PENDING"}
