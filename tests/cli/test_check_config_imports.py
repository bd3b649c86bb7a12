"""check-config runs at every start and reload on configs of thousands of targets (budget: 3 s
for 5,000, bench/config_load): it loads no probe, exporter or scheduler library, which took
about a third of its time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.config.common import ENV, ROOT, example
from tests.helpers.agent_cli import agent_env

HEAVY = ("pydicom", "pynetdicom", "httpx", "apscheduler", "opentelemetry", "grpc", "hdrh")

SCRIPT = """
import contextlib, io, json, sys
from agent.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(["check-config", "--config", sys.argv[1]])
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
probes = sorted(m for m in sys.modules if m.startswith("probes."))
print(json.dumps({"code": code, "heavy": heavy, "probes": probes, "out": len(out.getvalue())}))
"""


def test_check_config_imports_no_probe_or_exporter_library(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(example()))
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cfg), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=agent_env(ENV),
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["code"] == 0 and got["out"] > 1000  # it did check and print the config
    assert got["heavy"] == [], got
    assert got["probes"] == [], got
