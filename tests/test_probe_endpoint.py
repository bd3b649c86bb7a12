"""GET /probe?target=ID&probe=NAME: runs a configured probe now, answers in the exposition format,
404s anything not configured, honours the target's deadline and connection limit, same auth."""

from __future__ import annotations

import time
from pathlib import Path

import bcrypt
import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent.simulator import SimulatedPACS
from agent.web_config import load_web_config
from tests.helpers.agent_fixtures import base_url, running_agent
from tests.helpers.ports import held_refused_port

AGENT = {"selfProbe": {"enabled": False}}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def down_target(port: int, **cfg: object) -> dict[str, object]:
    return {
        "id": "pacs-down",
        "config": {"host": "127.0.0.1", "port": port, "calledAET": "X", **cfg},
        # a long interval: the scheduled run does not compete with the test's own
        "healthCheck": {"interval": 600000, "timeout": 700},
        "probes": {"dicom_find": {"enabled": False}},
    }


def test_probe_runs_now_and_answers_blackbox_style() -> None:
    with SimulatedPACS() as sim:
        with running_agent([sim.endpoint_config("pacs-ok", interval_ms=600000)], AGENT) as svc:
            before = sim.echo_count
            r = httpx.get(
                base_url(svc) + "/probe",
                params={"target": "pacs-ok", "probe": "dicom_echo"},
                timeout=10,
            )
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            s = samples(r.text)
            assert s[("probe_success", ())] == 1.0
            assert s[("probe_duration_seconds", ())] > 0
            phases = {dict(k[1])["phase"] for k in s if k[0] == "probe_phase_duration_seconds"}
            assert {"connect", "associate", "dimse"} <= phases
            assert sim.echo_count > before  # it really dialled the PACS, now
            api = httpx.get(base_url(svc) + "/probe?target=pacs-ok&probe=api_ping", timeout=10)
            assert samples(api.text)[("probe_success", ())] == 1.0


def test_failure_carries_the_reason() -> None:
    with running_agent([down_target(held_refused_port())], AGENT) as svc:
        r = httpx.get(base_url(svc) + "/probe?target=pacs-down&probe=dicom_echo", timeout=10)
    s = samples(r.text)
    assert r.status_code == 200
    assert s[("probe_success", ())] == 0.0
    assert s[("probe_failure_reason", (("reason", "refused"),))] == 1.0


def test_only_configured_targets_and_probes() -> None:
    with running_agent([down_target(held_refused_port())], AGENT) as svc:
        url = base_url(svc) + "/probe"
        for params in (
            {"target": "nope", "probe": "dicom_echo"},
            {"target": "127.0.0.1:11112", "probe": "dicom_echo"},
            {"target": "pacs-down", "probe": "dicom_find"},  # switched off for this target
            {"target": "pacs-down", "probe": "nonsense"},
        ):
            assert httpx.get(url, params=params, timeout=5).status_code == 404, params
        assert httpx.get(url, params={"target": "pacs-down"}, timeout=5).status_code == 400
        two = url + "?target=pacs-down&target=x&probe=dicom_echo"
        assert httpx.get(two, timeout=5).status_code == 400


def test_the_targets_connection_limit_and_deadline_apply() -> None:
    with running_agent([down_target(held_refused_port(), maxConnections=1)], AGENT) as svc:
        limiter = svc._installed["pacs-down"].limiter  # noqa: SLF001 - hold the one slot
        assert limiter.acquire(timeout=5)
        try:
            t0 = time.monotonic()
            r = httpx.get(base_url(svc) + "/probe?target=pacs-down&probe=dicom_echo", timeout=10)
            elapsed = time.monotonic() - t0
        finally:
            limiter.release()
    s = samples(r.text)
    # it waited for the slot, within the 700 ms deadline, and never dialled (not "refused")
    assert s[("probe_success", ())] == 0.0
    assert s[("probe_failure_reason", (("reason", "timeout"),))] == 1.0
    assert 0.6 < elapsed < 5


def test_same_auth_as_metrics(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prom: {hashed}\n")
    down = [down_target(held_refused_port())]
    with running_agent(down, AGENT, web=load_web_config(str(web))) as svc:
        url = base_url(svc) + "/probe?target=pacs-down&probe=dicom_echo"
        assert httpx.get(url, timeout=5).status_code == 401
        assert httpx.get(url, auth=("prom", "pw"), timeout=10).status_code == 200
