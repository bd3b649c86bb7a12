"""`agent run` as a real process: the no-config demo, the /health contract, stop, no secrets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent.simulator import SimulatedPACS
from tests.helpers.daemon import start_agent
from tests.helpers.peers import wait_until

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def daemon(*args: str, env: dict | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    e.update(env or {})
    # the agent binds port 0 itself and prints it: no released port another process could take
    p, url = start_agent(list(args), stderr=subprocess.PIPE, env=e, cwd=ROOT)
    try:
        yield p, url
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def parse(text: str) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text) for s in fam.samples
    }


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def test_no_config_demo_shows_metrics_and_health_within_10_s() -> None:
    with daemon() as (p, url):
        t0 = time.monotonic()

        def ready() -> dict | None:
            r = get(url + "/metrics")
            if r is None or r.status_code != 200:
                return None
            s = parse(r.text)
            ok = s.get(("probe_success", (("probe", "dicom_echo"), ("target", "simulated-sectra"))))
            health = s.get(("pacs_target_health", (("state", "HEALTHY"),
                                                    ("target", "simulated-sectra"))))
            return s if ok == 1 and health == 1 else None

        wait_until(ready, 10)
        assert time.monotonic() - t0 < 10
        r = httpx.get(url + "/health", timeout=2)
        assert r.headers["content-type"] == "application/json"
        doc = r.json()
        assert set(doc) >= {"timestamp", "status", "targets"}
        [t] = doc["targets"]
        assert t["id"] == "simulated-sectra"
        for c in t["checks"]:
            assert set(c) >= {"name", "status", "message", "responseTime", "reason", "phases"}
        assert httpx.get(url + "/-/ready", timeout=2).status_code == 200
        assert httpx.get(url + "/-/healthy", timeout=2).status_code == 200
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.wait(5) == 0
        assert time.monotonic() - t0 < 5
        assert "/metrics" in p.stderr.read()


def test_unhealthy_is_503_and_secrets_never_printed(tmp_path: Path) -> None:
    secrets = {"PACS_PW": "pw-Daemon-4431-secret", "PACS_KEY": "key-Daemon-9902-secret"}
    with SimulatedPACS() as sim:
        doc = sim.endpoint_config(interval_ms=300, failureThreshold=1)
        doc["config"]["credentials"] = {"username": "svc", "password": "${PACS_PW}"}
        doc["secttraConfig"]["customHeaders"] = {"X-API-Key": "${PACS_KEY}"}
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps(doc))
        with daemon("--config", str(cfg), "-v", env=secrets) as (p, url):
            wait_until(lambda: (r := get(url + "/health")) and r.json()["status"] == "HEALTHY", 10)
            sim.faults.dicom_status = 0xC000
            wait_until(lambda: (r := get(url + "/health")) and r.status_code == 503, 10)
            health = httpx.get(url + "/health", timeout=2).text
            metrics = httpx.get(url + "/metrics", timeout=2).text
            p.send_signal(signal.SIGTERM)
            p.wait(5)
            logs = p.stderr.read() + "".join(p.stdout_lines)  # type: ignore[attr-defined]
    assert json.loads(health)["status"] == "UNHEALTHY"
    assert "dimse_status" in metrics
    assert "DEBUG" in logs  # logs at the most verbose level were searched too
    for s in secrets.values():
        for where, text in (("health", health), ("metrics", metrics), ("logs", logs)):
            assert s not in text, where
