"""`promtool check metrics` accepts the agent's real /metrics output."""

from __future__ import annotations

import shutil
import subprocess

import httpx

from agent.simulator import SimulatedPACS
from tests.agent_fixtures import base_url, running_agent, scrape, total
from tests.peers import wait_until


def test_promtool_accepts_real_metrics() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: `make test` installs Debian's prometheus package"
    with SimulatedPACS() as sim:
        sim.faults.primary_down = True  # so failover and failure series exist too
        with running_agent([sim.endpoint_config(interval_ms=500)]) as svc:
            wait_until(lambda: total(scrape(svc), "pacs_probe_runs_total") >= 5, 10)
            text = httpx.get(base_url(svc) + "/metrics", timeout=5).text
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "# TYPE pacs_probe_latency_seconds summary" in text
