"""A reload that changes a kept target's thresholds or interval takes effect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from agent.simulator import SimulatedPACS
from tests.helpers import wait_until
from tests.helpers.agent_fixtures import base_url, running_agent, scrape, total


def _target(sim: SimulatedPACS, interval_ms: int, **health: Any) -> dict[str, Any]:
    doc = sim.endpoint_config("pacs", interval_ms=interval_ms, **health)
    doc["secttraConfig"] = {}
    doc["probes"] = {"dicom_find": {"enabled": False}}
    return doc


def _reload(svc: Any, cfg: Path, target: dict[str, Any]) -> None:
    cfg.write_text(json.dumps({"targets": [target]}))
    r = httpx.post(base_url(svc) + "/-/reload", timeout=10)
    assert r.status_code == 200, r.text


def _state(svc: Any) -> str:
    return httpx.get(base_url(svc) + "/health", timeout=5).json()["targets"][0]["status"]


def test_a_lower_failure_threshold_makes_a_failing_target_unhealthy(tmp_path: Path) -> None:
    with SimulatedPACS() as sim:
        sim.faults.dicom_status = 0xC000
        cfg = tmp_path / "agent.json"
        first = _target(sim, 200, failureThreshold=100)
        cfg.write_text(json.dumps({"targets": [first]}))
        with running_agent([first], config_path=str(cfg)) as svc:
            wait_until(
                lambda: total(scrape(svc), "pacs_probe_runs_total", result="failure") >= 3,
                10,
                what="three failed runs",
            )
            assert _state(svc) == "DEGRADED"  # 3 of 100 failures: WARN, not FAIL
            before = total(scrape(svc), "pacs_probe_runs_total", probe="dicom_echo")
            _reload(svc, cfg, _target(sim, 200, failureThreshold=1))
            wait_until(lambda: _state(svc) == "UNHEALTHY", 10, what="new threshold applied")
            # the target kept its series: counters went on, not back to 0
            after = total(scrape(svc), "pacs_probe_runs_total", probe="dicom_echo")
            assert after > before


def test_a_shorter_interval_runs_more_often(tmp_path: Path) -> None:
    with SimulatedPACS() as sim:
        cfg = tmp_path / "agent.json"
        slow = _target(sim, 60_000)
        cfg.write_text(json.dumps({"targets": [slow]}))
        with running_agent([slow], config_path=str(cfg)) as svc:
            _reload(svc, cfg, _target(sim, 100))

            def runs() -> float:
                return total(scrape(svc), "pacs_probe_runs_total", probe="dicom_echo")

            wait_until(lambda: runs() >= 10, 10, what="ten runs at the new 100 ms interval")
