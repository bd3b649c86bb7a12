"""`agent probe --once` as a subprocess: against the embedded simulator (no --config), and with a
config file pointing at a SimulatedPACS run in this process with its faults switched on."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.health_json import SHOWN_FACTS
from agent.simulator import SimulatedPACS
from probes.registry import PROBES
from tests.helpers import free_port

AGENT = str(Path(sys.executable).with_name("agent"))
CHECKS = list(PROBES)  # the embedded simulator configures every registered probe
PHASES = {
    "dicom_echo": {"connect", "associate", "dimse", "release"},
    "dicom_find": {"connect", "associate", "dimse", "first_match", "release"},
    "api_ping": {"connect", "first_byte", "transfer"},
    "viewer": {"connect", "first_byte", "transfer"},  # worklist: opt-in (patient data)
    "failover": {"primary", "secondary"},
    "dicom_retrieve": {"connect", "associate", "first_image", "last_image", "release"},
    "dicom_store": {"connect", "associate", "store", "findable", "release"},
    "worklist": {"connect", "associate", "first_match", "dimse", "release"},
    "dicom_capabilities": {"connect", "associate", "release"},
    "dicomweb": {"connect", "first_byte", "transfer", "metadata"},
}


def once(*args: str, timeout: float = 60) -> tuple[int, Any, str]:
    proc = subprocess.run(
        [AGENT, "probe", "--once", *args], capture_output=True, text=True, timeout=timeout
    )
    doc = None
    if "--output" in args and proc.stdout.strip():
        doc = json.loads(proc.stdout)
    return proc.returncode, doc, proc.stdout + proc.stderr


def checks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [t] = doc["targets"]
    return {c["name"]: c for c in t["checks"]}


@pytest.fixture
def sim() -> Iterator[SimulatedPACS]:
    with SimulatedPACS() as s:
        yield s


@pytest.fixture
def config(tmp_path: Path, sim: SimulatedPACS) -> Path:
    p = tmp_path / "sim.json"
    p.write_text(json.dumps(sim.endpoint_config("sim-pacs")))
    return p


def test_no_config_probes_the_embedded_simulator_with_all_ten_checks() -> None:
    code, doc, out = once("--output", "json")
    assert code == 0, out
    assert doc["status"] == "HEALTHY"
    [t] = doc["targets"]
    assert t["status"] == "HEALTHY"
    assert [c["name"] for c in t["checks"]] == CHECKS
    for c in t["checks"]:
        assert c["status"] == "PASS", c
        assert c["reason"] is None
        assert PHASES[c["name"]] <= set(c["phases"]), c
        assert all(v >= 0 for v in c["phases"].values())
        assert c["responseTime"] > 0 and c["attempts"] == 1
        # the facts a check shows are among those its registry entry lists as outputs
        shown = {field for field, key in SHOWN_FACTS if key in c}
        assert shown <= set(PROBES[c["name"]].outputs), c
    assert checks(doc)["dicom_find"]["matches"] == 1
    assert checks(doc)["failover"]["activeEndpoint"] == "primary"
    c = checks(doc)
    assert c["dicom_retrieve"]["message"] == "C-GET successful: 2 instances"
    # the counts each probe reports, in the JSON contract (counts only, no matched data)
    assert c["dicom_retrieve"]["instances"] == 2
    assert c["dicom_retrieve"]["bytes"] > 2 * 64  # two 8x8 8-bit images and their headers
    assert c["dicom_store"]["bytes"] > 64
    assert c["worklist"]["matches"] == 1
    assert c["dicomweb"]["matches"] == 1 and c["dicomweb"]["instances"] == 2
    assert "instances" not in c["dicom_find"] and "bytes" not in c["dicom_echo"]
    assert c["dicom_store"]["message"] == "C-STORE successful, findable"
    assert c["worklist"]["message"] == "Worklist C-FIND successful: 1 item"
    assert c["dicom_capabilities"]["message"] == "all 14 presentation contexts accepted"
    assert c["dicomweb"]["message"] == "QIDO-RS and WADO-RS successful: 2 instances"


def test_simulator_serves_c_move_to_a_known_destination(tmp_path: Path, sim: SimulatedPACS) -> None:
    """C-MOVE: the simulator opens a storage association to the agent's own SCP, known to it as
    MOVE_AE; an AE title it does not know is refused with 0xA801."""
    port = free_port()
    sim.move_destinations["AGENT_STORE"] = ("127.0.0.1", port)
    cfg = sim.endpoint_config("sim-pacs", imaging=True)
    move = {"method": "move", "moveDestination": "AGENT_STORE", "storeListen": f"127.0.0.1:{port}"}
    cfg["probes"]["dicom_retrieve"].update(move)
    path = tmp_path / "move.json"
    path.write_text(json.dumps(cfg))
    code, doc, out = once("--config", str(path), "--probe", "dicom_retrieve", "--output", "json")
    assert code == 0, out
    r = checks(doc)["dicom_retrieve"]
    assert r["status"] == "PASS" and r["message"] == "C-MOVE successful: 2 instances", r
    cfg["probes"]["dicom_retrieve"]["moveDestination"] = "NOBODY"
    path.write_text(json.dumps(cfg))
    code, doc, out = once("--config", str(path), "--probe", "dicom_retrieve", "--output", "json")
    assert code == 2, out
    r = checks(doc)["dicom_retrieve"]
    assert r["reason"] == "dimse_status" and "0xA801" in r["message"], r


def test_healthy_simulator_exits_0(config: Path) -> None:
    code, doc, out = once("--config", str(config), "--output", "json")
    assert code == 0, out
    assert doc["status"] == "HEALTHY"
    assert doc["targets"][0]["id"] == "sim-pacs"
    assert all(c["status"] == "PASS" for c in checks(doc).values())


def test_dicom_status_fault_fails_dicom_checks_and_exits_2(
    config: Path,
    sim: SimulatedPACS,
) -> None:
    sim.faults.dicom_status = 0xC000
    code, doc, out = once("--config", str(config), "--output", "json")
    assert code == 2, out
    assert doc["status"] == "UNHEALTHY"
    c = checks(doc)
    for name in ("dicom_echo", "dicom_find"):
        assert c[name]["status"] == "FAIL", c[name]
        assert c[name]["reason"] == "dimse_status"
        assert "0xC000" in c[name]["message"]
    for name in ("api_ping", "viewer", "failover"):
        assert c[name]["status"] == "PASS"


def test_primary_down_is_failover_warn_degraded_and_exits_1(
    config: Path,
    sim: SimulatedPACS,
) -> None:
    sim.faults.primary_down = True
    code, doc, out = once("--config", str(config), "--output", "json")
    assert code == 1, out
    assert doc["status"] == "DEGRADED"
    assert doc["targets"][0]["status"] == "DEGRADED"
    c = checks(doc)
    assert c["failover"]["status"] == "WARN"
    assert "running on secondary" in c["failover"]["message"]
    assert c["failover"]["activeEndpoint"] == "secondary"
    assert [n for n, v in c.items() if v["status"] != "PASS"] == ["failover"]


def test_everything_down_exits_2_with_refused(config: Path, sim: SimulatedPACS) -> None:
    sim.stop()
    code, doc, out = once("--config", str(config), "--output", "json")
    assert code == 2, out
    assert {v["reason"] for v in checks(doc).values()} == {"refused"}


def test_table_output_and_probe_filter(config: Path, sim: SimulatedPACS) -> None:
    sim.faults.primary_down = True
    code, _, out = once("--config", str(config))
    assert code == 1
    assert "running on secondary" in out and "DEGRADED" in out
    code, doc, out = once("--config", str(config), "--probe", "dicom_echo", "--output", "json")
    assert code == 0, out
    assert list(checks(doc)) == ["dicom_echo"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"id": "x", "config": {"host": "127.0.0.1", "porrt": 104}}', "porrt"),
        ('{"id": "x", "config": {"host": "127.0.0.1", "port": 70000}}', "config.port"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_config_exits_3(tmp_path: Path, content: str, needle: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    code, doc, out = once("--config", str(bad), "--output", "json")
    assert code == 3, out
    assert doc is None
    assert needle in out and str(bad) in out


def test_missing_config_file_exits_3(tmp_path: Path) -> None:
    code, _, out = once("--config", str(tmp_path / "nope.json"), "--output", "json")
    assert code == 3
    assert "cannot read" in out
