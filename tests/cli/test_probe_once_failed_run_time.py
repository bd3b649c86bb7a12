"""A failed run shows how long it took (here: the whole deadline), not 0.0."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.common import agent, dicom_target, write_config
from tests.helpers.peers import silent_listener


def test_timed_out_run_shows_its_elapsed_time(tmp_path: Path) -> None:
    with silent_listener() as port:
        cfg = write_config(tmp_path, [dicom_target(port, timeout_ms=500)])
        table = agent("probe", "--once", "--config", str(cfg), "--probe", "dicom_echo")
        doc = agent(
            "probe", "--once", "--config", str(cfg), "--probe", "dicom_echo", "--output", "json"
        )
    assert table.returncode == doc.returncode == 2
    [c] = json.loads(doc.stdout)["targets"][0]["checks"]
    assert c["status"] == "FAIL" and c["reason"] == "timeout"
    assert 450 <= c["responseTime"] < 5000
    [row] = [ln for ln in table.stdout.splitlines() if ln.strip().startswith("dicom_echo")]
    assert 450 <= float(row.split()[2]) < 5000, row
