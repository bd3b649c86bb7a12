"""`probe --once` starts with a Nagios plugin line: status, the failing checks with reason and
message, and perfdata `check=VALUEms;WARN;CRIT` for each check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.simulator import SimulatedPACS
from tests.cli.common import agent, dicom_target, write_config
from tests.helpers.ports import held_refused_port

PERF = re.compile(r"^(?P<name>[\w./:-]+)=(?P<value>\d+(?:\.\d+)?)ms;(?P<warn>\d+);(?P<crit>\d+)$")


@pytest.fixture()
def sim():
    with SimulatedPACS() as s:
        yield s


def _split(line: str) -> tuple[str, str, dict[str, tuple[float, int, int]]]:
    head, _, perfdata = line.partition(" | ")
    status, _, text = head.partition(" - ")
    perf = {}
    for item in perfdata.split():
        m = PERF.match(item)
        assert m, item
        perf[m["name"]] = (float(m["value"]), int(m["warn"]), int(m["crit"]))
    return status, text, perf


def test_healthy_line_has_perfdata_for_every_check(tmp_path: Path, sim: SimulatedPACS) -> None:
    doc = sim.endpoint_config("pacs", interval_ms=30000, degradedLatency=1500)
    doc["healthCheck"]["timeout"] = 4000
    r = agent("probe", "--once", "--config", str(write_config(tmp_path, [doc])))
    assert r.returncode == 0, r.stdout + r.stderr
    status, text, perf = _split(r.stdout.splitlines()[0])
    assert status == "HEALTHY"
    assert "passed" in text
    assert set(perf) == {"dicom_echo", "dicom_find", "api_ping", "viewer", "failover"}
    for value, warn, crit in perf.values():
        assert value > 0 and warn == 1500 and crit == 4000
    assert r.stderr == ""


def test_failing_line_names_the_checks_and_reasons(tmp_path: Path, sim: SimulatedPACS) -> None:
    good = sim.endpoint_config("up", interval_ms=30000)
    down = dicom_target(held_refused_port(), "down")
    r = agent("probe", "--once", "--config", str(write_config(tmp_path, [good, down])))
    assert r.returncode == 2, r.stdout + r.stderr
    first = r.stdout.splitlines()[0]
    status, text, perf = _split(first)
    assert status == "UNHEALTHY"
    assert "down/dicom_echo FAIL (refused: connection refused by 127.0.0.1:" in text
    assert "down/dicom_find FAIL (refused:" in text
    assert "up/" not in text  # passing checks are not problems
    assert {"up/dicom_echo", "down/dicom_echo", "down/dicom_find"} <= set(perf)
    assert r.stdout.splitlines()[1].endswith("agent: UNHEALTHY")  # then the table
