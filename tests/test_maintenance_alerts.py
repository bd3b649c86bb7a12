"""The shipped alerts stay quiet for a target in maintenance, and only because of the window.

alerts/tests/maintenance.test.yml asserts silence inside a window (promtool, run with the other
unit tests by test_alerts.py). Here the same group is run again with the window closed: each
alert it lists as silent must then fire, so the silence is the window's doing, not the data's.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from tests.helpers.promserver import find_promtool

ALERTS_DIR = Path(__file__).resolve().parents[1] / "alerts"
TESTS = ALERTS_DIR / "tests" / "maintenance.test.yml"
GROUP = "healthy: a target in maintenance stays quiet on every target alert; the other one pages"
# needs C-ECHO up and C-FIND down at once, which this group's data cannot also page on
NOT_PROVEN_HERE = {"PacsDicomFindFailingEchoOk"}


def run_group(tmp_path: Path, group: dict, name: str) -> subprocess.CompletedProcess[str]:
    doc = {
        "rule_files": [
            str(ALERTS_DIR / "pacs-health-agent.recording.yml"),
            str(ALERTS_DIR / "pacs-health-agent.alerts.yml"),
        ],
        "evaluation_interval": "1m",
        "tests": [group],
    }
    path = tmp_path / f"{name}.test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return subprocess.run(
        [find_promtool(), "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


def the_group() -> dict:
    groups = yaml.safe_load(TESTS.read_text())["tests"]
    return next(g for g in groups if g["name"] == GROUP)


def test_inside_the_window_every_target_alert_is_silent(tmp_path: Path) -> None:
    result = run_group(tmp_path, the_group(), "inside")
    assert result.returncode == 0, result.stdout + result.stderr


def test_with_the_window_closed_the_same_data_fires(tmp_path: Path) -> None:
    group = the_group()
    for s in group["input_series"]:
        if s["series"].startswith("pacs_target_maintenance") and "pacs-dr" not in s["series"]:
            s["values"] = "0x80"
    silent = {case["alertname"] for case in group["alert_rule_test"] if not case["exp_alerts"]}
    assert len(silent) >= 9
    result = run_group(tmp_path, group, "outside")
    assert result.returncode != 0
    fired = set(re.findall(r"alertname: (\w+), time:", result.stderr))
    assert silent - NOT_PROVEN_HERE <= fired, sorted(silent - NOT_PROVEN_HERE - fired)
