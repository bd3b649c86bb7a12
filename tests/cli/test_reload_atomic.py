"""A reload swaps in the whole new config or nothing: a config that fails late (while its jobs
are being scheduled) is refused with 400 and one line, the running targets keep running, and
pacs_config_last_reload_successful goes to 0, over HTTP and on SIGHUP."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.service import AgentService
from agent.simulator import SimulatedPACS
from tests.cli.common import daemon, samples, wait_health
from tests.helpers import wait_until
from tests.helpers.agent_fixtures import base_url, running_agent, sample, scrape, total

# An interval no scheduler can place (its first run would fall after the calendar's last day):
# refused by the config check where it has a bound, else while scheduling; either way before
# anything is swapped.
UNSCHEDULABLE_MS = 1e15


@pytest.fixture()
def sim():
    with SimulatedPACS() as s:
        yield s


def _echo_only(sim: SimulatedPACS, target_id: str, interval_ms: float = 200) -> dict[str, Any]:
    doc = sim.endpoint_config(target_id, interval_ms=200)
    doc["healthCheck"]["interval"] = interval_ms
    doc["secttraConfig"] = {}
    doc["probes"] = {"dicom_find": {"enabled": False}}
    return doc


def _write(path: Path, targets: list[dict[str, Any]]) -> None:
    path.write_text(json.dumps({"targets": targets, "agent": {"listen": "127.0.0.1:0"}}))


def _ids(svc: AgentService) -> list[str]:
    doc = httpx.get(base_url(svc) + "/health", timeout=5).json()
    return [t["id"] for t in doc["targets"]]


def _runs(svc: AgentService, target: str) -> float:
    return total(scrape(svc), "pacs_probe_runs_total", target=target)


def _assert_rejected_and_unchanged(svc: AgentService, reply: httpx.Response) -> None:
    assert reply.status_code == 400, reply.text
    body = reply.text.strip()
    assert body and "\n" not in body, body  # one line, not an empty reply
    assert sample(scrape(svc), "pacs_config_last_reload_successful") == 0
    assert _ids(svc) == ["old"]
    before = _runs(svc, "old")
    wait_until(lambda: _runs(svc, "old") > before, 10, what="old target still probed")
    doc = httpx.get(base_url(svc) + "/health", timeout=5).json()
    assert doc["targets"][0]["status"] == "HEALTHY"


def test_unschedulable_interval_is_refused_and_the_old_target_keeps_running(
    tmp_path: Path, sim: SimulatedPACS
) -> None:
    cfg = tmp_path / "agent.json"
    old = [_echo_only(sim, "old")]
    _write(cfg, old)
    with running_agent(old, config_path=str(cfg)) as svc:
        wait_until(lambda: _runs(svc, "old") >= 1, 10, what="first run")
        assert sample(scrape(svc), "pacs_config_last_reload_successful") == 1
        new = _echo_only(sim, "new", interval_ms=UNSCHEDULABLE_MS)
        _write(cfg, [new])
        reply = httpx.post(base_url(svc) + "/-/reload", timeout=10)
        assert "interval" in reply.text
        _assert_rejected_and_unchanged(svc, reply)


def test_a_scheduler_failure_mid_swap_puts_the_old_jobs_back(
    tmp_path: Path, sim: SimulatedPACS, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "pw-Reload-5521-secret"
    monkeypatch.setenv("PACS_RELOAD_PW", secret)
    cfg = tmp_path / "agent.json"
    old = [_echo_only(sim, "old")]
    _write(cfg, old)
    with running_agent(old, config_path=str(cfg)) as svc:
        wait_until(lambda: _runs(svc, "old") >= 1, 10, what="first run")
        real = svc.scheduler.set_plans
        calls: list[list[str]] = []

        # Fault injection: the scheduler raises halfway (after dropping the old jobs), the way
        # APScheduler does for a trigger it cannot place. Nothing else is replaced.
        def failing_once(plans: list[Any]) -> None:
            calls.append([p.id for p in plans])
            if len(calls) == 1:
                real([])
                # an error text that happens to carry the new config's secret
                raise OverflowError(f"date value out of range near {secret}")
            real(plans)

        svc.scheduler.set_plans = failing_once  # type: ignore[method-assign]
        new = _echo_only(sim, "new")
        new["config"]["credentials"] = {"username": "svc", "password": "${PACS_RELOAD_PW}"}
        _write(cfg, [new])
        reply = httpx.post(base_url(svc) + "/-/reload", timeout=10)
        assert calls == [["new"], ["old"]]
        assert "date value out of range" in reply.text
        assert secret not in reply.text
        _assert_rejected_and_unchanged(svc, reply)


def test_sighup_with_a_late_failing_config_keeps_running_and_reports_0(
    tmp_path: Path, sim: SimulatedPACS
) -> None:
    cfg = tmp_path / "agent.json"
    _write(cfg, [_echo_only(sim, "old")])
    with daemon("--config", str(cfg)) as (p, url):
        wait_health(url, lambda d: d["status"] == "HEALTHY")
        assert samples(url)[("pacs_config_last_reload_successful", ())] == 1
        _write(cfg, [_echo_only(sim, "new", interval_ms=UNSCHEDULABLE_MS)])
        p.send_signal(signal.SIGHUP)
        wait_until(
            lambda: samples(url)[("pacs_config_last_reload_successful", ())] == 0,
            10,
            what="reload failure reported",
        )
        doc = wait_health(url, lambda d: d["status"] == "HEALTHY")
        assert [t["id"] for t in doc["targets"]] == ["old"]
        assert p.poll() is None
