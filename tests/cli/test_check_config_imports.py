"""check-config runs at every start and reload on configs of thousands of targets (budget: 3 s
for 5,000, bench/config_load): it loads no scheduler, exporter or plan machinery. (The probe
modules, with pydicom, pynetdicom and httpx, are imported: the config schema takes each probe's
settings model from its module, probes.registry.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.config.common import ENV, ROOT, example
from tests.helpers.agent_cli import agent_env

HEAVY = ("apscheduler", "opentelemetry", "grpc", "hdrh", "prometheus_client")
AGENT = (
    "agent.targets",
    "agent.runner",
    "agent.scheduler",
    "agent.service",
    "agent.prometheus_exporter",
    "agent.otlp_exporter",
    "agent.evaluator",
    "agent.recorder",
)

SCRIPT = """
import contextlib, io, json, sys
from agent.cli import main
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = main(["check-config", "--config", sys.argv[1]])
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[2].split(",")))
agent = sorted(set(sys.modules) & set(sys.argv[3].split(",")))
print(json.dumps({"code": code, "heavy": heavy, "agent": agent, "out": len(out.getvalue())}))
"""


def test_check_config_imports_no_scheduler_exporter_or_plan(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(example()))
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cfg), ",".join(HEAVY), ",".join(AGENT)],
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
    assert got["agent"] == [], got
