"""/health's HTTP status per agent state: 200 HEALTHY, 200 DEGRADED (still serving), 503
UNHEALTHY (UNKNOWN is in test_unknown_before_first_result.py: 200)."""

from __future__ import annotations

import httpx

from agent.simulator import SimulatedPACS
from tests.helpers import wait_until
from tests.helpers.agent_fixtures import base_url, running_agent


def _echo_target(sim: SimulatedPACS, **health: object) -> dict:
    doc = sim.endpoint_config("pacs", interval_ms=1000, **health)
    doc["secttraConfig"] = {}
    doc["probes"] = {"dicom_find": {"enabled": False}}
    return doc


def _status(svc: object) -> tuple[int, str] | None:
    r = httpx.get(base_url(svc) + "/health", timeout=5)
    return r.status_code, r.json()["status"]


def test_healthy_degraded_unhealthy() -> None:
    with SimulatedPACS() as sim:
        with running_agent([_echo_target(sim, degradedLatency=250, failureThreshold=1)]) as svc:
            wait_until(lambda: _status(svc) == (200, "HEALTHY"), 10, what="HEALTHY, 200")
            sim.faults.delay = 0.5  # 500 ms > degradedLatency 250 ms: p95 over, WARN
            wait_until(lambda: _status(svc) == (200, "DEGRADED"), 10, what="DEGRADED, 200")
            sim.faults.delay = 0
            sim.faults.dicom_status = 0xC000
            wait_until(lambda: _status(svc) == (503, "UNHEALTHY"), 10, what="UNHEALTHY, 503")
