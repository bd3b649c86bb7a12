"""check-config shows what will run: durations as whole milliseconds, the name a target reports,
only the probes that will run; it warns when no target is enabled, and so does `agent run`."""

from __future__ import annotations

import signal
from pathlib import Path

import yaml

from tests.cli.common import agent, daemon, dicom_target, write_config


def _shown(stdout: str) -> dict:
    return yaml.safe_load("\n".join(ln for ln in stdout.splitlines() if not ln.startswith("#")))


def test_durations_names_and_probes(tmp_path: Path) -> None:
    target = dicom_target(104, healthCheck={"interval": "1m", "timeout": 2500})
    cfg = write_config(tmp_path, [target])
    r = agent("check-config", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "30000.0" not in r.stdout and ".0\n" not in r.stdout
    [t] = _shown(r.stdout)["targets"]
    assert t["healthCheck"]["interval"] == 60000 and isinstance(t["healthCheck"]["interval"], int)
    assert t["healthCheck"]["timeout"] == 2500
    assert t["name"] == "pacs"  # defaulted to the id, as /health and the metrics show it
    assert set(t["probes"]) == {"dicom_echo", "dicom_find"}  # no API, viewer or failover URL
    assert r.stderr == ""


def test_no_enabled_target_is_warned_about(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [dicom_target(104, enabled=False)])
    r = agent("check-config", "--config", str(cfg))
    assert r.returncode == 0
    assert "no target is enabled" in r.stderr
    with daemon("--config", str(cfg)) as (p, _url):
        p.send_signal(signal.SIGTERM)
        p.wait(10)
        assert p.stderr is not None
        assert "no target is enabled" in p.stderr.read()
