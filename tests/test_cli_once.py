"""`agent probe --once` on the guide's sample config, pointed at local peers by a copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.simulator import SimulatedPACS
from tests.helpers.ports import held_refused_port

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {
    "SECTRA_API_PASSWORD": "pw-Zq81-unique-secret",
    "SECTRA_API_KEY": "key-Xy77-unique-secret",
}


def agent(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=e,
        cwd=ROOT,
    )


@pytest.fixture()
def sim():
    with SimulatedPACS() as s:
        yield s


def local_copy(tmp_path: Path, sim: SimulatedPACS, **health: object) -> Path:
    """The committed sample with every host pointed at the simulator (and nothing else changed
    but TLS off: the TLS variants are tested with generated certificates elsewhere)."""
    doc = json.loads((ROOT / "examples" / "sectra-pacs-prod.json").read_text())
    doc["config"].update(host="127.0.0.1", port=sim.dicom_port, enableTLS=False)
    s = doc["secttraConfig"]
    s["apiEndpoint"] = sim.api_url
    s["worklistEndpoint"] = sim.api_url + "/worklist"
    s["viewerEndpoint"] = sim.api_url + "/viewer"
    doc["healthCheck"].update(health)
    p = tmp_path / "sectra.json"
    p.write_text(json.dumps(doc, indent=2))
    return p


def test_healthy_pacs_exits_0_with_the_json_contract(tmp_path: Path, sim: SimulatedPACS) -> None:
    cfg = local_copy(tmp_path, sim)
    r = agent("probe", "--once", "--config", str(cfg), "--output", "json", env=SECRETS)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "HEALTHY"
    assert doc["timestamp"].endswith("Z")
    [t] = doc["targets"]
    assert t["id"] == "sectra-pacs-prod" and t["name"] == "Sectra PACS Production"
    names = [c["name"] for c in t["checks"]]
    assert names == ["dicom_echo", "dicom_find", "api_ping", "viewer"]
    echo = t["checks"][0]
    assert echo["status"] == "PASS" and echo["message"] == "Echo successful"
    assert echo["reason"] is None and echo["responseTime"] > 0
    assert set(echo["phases"]) == {"connect", "associate", "dimse", "release"}
    assert abs(sum(echo["phases"].values()) - echo["responseTime"]) < 0.01
    assert t["checks"][1]["matches"] == 0  # no canary configured: a query that matches nobody
    for secret in SECRETS.values():
        assert secret not in r.stdout + r.stderr


def test_failing_dimse_status_exits_2(tmp_path: Path, sim: SimulatedPACS) -> None:
    sim.faults.dicom_status = 0xC001
    r = agent(
        "probe",
        "--once",
        "--config",
        str(local_copy(tmp_path, sim)),
        "--output",
        "json",
        env=SECRETS,
    )
    assert r.returncode == 2, r.stderr
    doc = json.loads(r.stdout)
    checks = {c["name"]: c for c in doc["targets"][0]["checks"]}
    assert doc["status"] == "UNHEALTHY"
    assert checks["dicom_echo"]["status"] == "FAIL"
    assert checks["dicom_echo"]["reason"] == "dimse_status"
    assert checks["api_ping"]["status"] == "PASS"


def test_down_pacs_exits_2_with_refused(tmp_path: Path, sim: SimulatedPACS) -> None:
    cfg = local_copy(tmp_path, sim)
    doc = json.loads(cfg.read_text())
    doc["config"]["port"] = held_refused_port()
    cfg.write_text(json.dumps(doc))
    r = agent(
        "probe",
        "--once",
        "--config",
        str(cfg),
        "--output",
        "json",
        "--probe",
        "dicom_echo",
        env=SECRETS,
    )
    assert r.returncode == 2
    [c] = json.loads(r.stdout)["targets"][0]["checks"]
    assert c["reason"] == "refused" and c["responseTime"] is not None


def test_slow_pacs_is_degraded_exit_1(tmp_path: Path, sim: SimulatedPACS) -> None:
    sim.faults.delay = 0.05
    cfg = local_copy(tmp_path, sim, degradedLatency=20)
    r = agent(
        "probe",
        "--once",
        "--config",
        str(cfg),
        "--target",
        "sectra-pacs-prod",
        "--probe",
        "dicom_echo",
        env=SECRETS,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "DEGRADED" in r.stdout and "WARN" in r.stdout  # the table, for people


def test_invalid_config_or_missing_secret_exits_3(tmp_path: Path, sim: SimulatedPACS) -> None:
    cfg = local_copy(tmp_path, sim)
    r = agent("probe", "--once", "--config", str(cfg), env={})
    assert r.returncode == 3
    assert "SECTRA_API_PASSWORD" in r.stderr and "not set" in r.stderr
    r = agent("probe", "--once", "--config", str(tmp_path / "missing.yaml"))
    assert r.returncode == 3
    r = agent("probe", "--once", "--config", str(cfg), "--target", "nope", env=SECRETS)
    assert r.returncode == 3


def test_check_config_redacts_secrets(tmp_path: Path, sim: SimulatedPACS) -> None:
    cfg = local_copy(tmp_path, sim)
    r = agent("check-config", "--config", str(cfg), env=SECRETS)
    assert r.returncode == 0, r.stderr
    assert "password: <redacted>" in r.stdout and "X-API-Key: <redacted>" in r.stdout
    assert "timeout: 30000" in r.stdout  # shown in the guide's unit
    for secret in SECRETS.values():
        assert secret not in r.stdout + r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nconfig:\n  host: h\n  port: 0\n")
    r = agent("check-config", "--config", str(bad))
    assert r.returncode == 3 and "bad.yaml:4: config.port" in r.stderr


def test_a_target_id_that_matches_nothing_is_usage_error_3(
    tmp_path: Path, sim: SimulatedPACS
) -> None:
    """`--target` naming no enabled target: exit 3, one line on stderr, no report on stdout;
    `diagnose` runs a disabled target when it is named, `probe --once` does not."""
    doc = json.loads(local_copy(tmp_path, sim).read_text())
    doc["enabled"] = False
    cfg = tmp_path / "disabled.json"
    cfg.write_text(json.dumps(doc))
    target = doc["id"]
    r = agent("probe", "--once", "--config", str(cfg), "--target", target, env=SECRETS)
    assert (r.returncode, r.stdout) == (3, ""), r.stderr
    assert r.stderr.strip() == f"agent probe: no enabled target with id {target!r}"
    r = agent("probe", "--once", "--config", str(cfg), "--target", "nope", env=SECRETS)
    assert (r.returncode, r.stdout) == (3, "")
    r = agent("diagnose", "--config", str(cfg), "--target", "nope", env=SECRETS)
    assert (r.returncode, r.stdout) == (3, ""), r.stderr
    assert r.stderr.strip() == "agent diagnose: no target with id 'nope'"
    r = agent("diagnose", "--config", str(cfg), "--target", target, "--output", "json", env=SECRETS)
    assert r.returncode in (0, 1), r.stderr
    assert [t["id"] for t in json.loads(r.stdout)["targets"]] == [target]


def test_a_probe_no_target_runs_is_usage_error_3(tmp_path: Path, sim: SimulatedPACS) -> None:
    doc = json.loads(local_copy(tmp_path, sim).read_text())
    doc.setdefault("probes", {})["dicom_find"] = {"enabled": False}
    cfg = tmp_path / "no-find.json"
    cfg.write_text(json.dumps(doc))
    r = agent("probe", "--once", "--config", str(cfg), "--probe", "dicom_find", env=SECRETS)
    assert (r.returncode, r.stdout) == (3, ""), r.stderr
    assert r.stderr.startswith(
        "agent probe: no target runs probe 'dicom_find'; configured probes: "
    )
    assert "dicom_echo" in r.stderr
