"""The integration guide's switches and JSON logs, on the real command line:
DEBUG_SECTRA=true → debug logging; TRACE_SECTRA=true → one line per probe run with its duration
and SUCCESS/FAILURE; --log-format json / agent.logFormat → one JSON object per line; redaction
still applies to JSON lines."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.logging_setup import setup_logging
from agent.redaction import Redactor
from agent.simulator import SimulatedPACS
from tests.helpers.ports import held_refused_port

TRACE = re.compile(r"\[SECTRA TRACE\] (\S+)/(\w+): (\d+)ms \((SUCCESS|FAILURE)\)")


def probe_once(tmp_path: Path, doc: dict[str, Any], env: dict[str, str], *args: str) -> str:
    cfg = tmp_path / "agent.json"
    cfg.write_text(json.dumps(doc))
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_SECTRA")}
    p = subprocess.run(
        [sys.executable, "-m", "agent", "probe", "--once", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )
    assert p.returncode in (0, 1, 2), p.stderr
    return p.stderr


def targets(sim: SimulatedPACS) -> list[dict[str, Any]]:
    down = {
        "id": "pacs-down",
        "config": {"host": "127.0.0.1", "port": held_refused_port(), "calledAET": "X"},
        "healthCheck": {"interval": 10000, "timeout": 2000},
        "probes": {"dicom_find": {"enabled": False}},
    }
    return [sim.endpoint_config("pacs-sim"), down]


def test_trace_sectra_one_line_per_run(tmp_path: Path) -> None:
    with SimulatedPACS() as sim:
        doc = {"targets": targets(sim)}
        quiet = probe_once(tmp_path, doc, {})
        traced = probe_once(tmp_path, doc, {"TRACE_SECTRA": "true"})
    assert "SECTRA TRACE" not in quiet
    runs = {(m[1], m[2]): m[4] for m in TRACE.finditer(traced)}
    assert runs[("pacs-sim", "dicom_echo")] == "SUCCESS"
    assert runs[("pacs-sim", "dicom_find")] == "SUCCESS"
    assert runs[("pacs-down", "dicom_echo")] == "FAILURE"
    # one line per run: the simulator target runs five probes, the down one one
    assert len(TRACE.findall(traced)) == 6
    # never patient data: the canary's patient id is in the config, not in the trace
    assert "SIM" not in "".join(m[0] for m in TRACE.finditer(traced)).replace("pacs-sim", "")


def test_debug_sectra_turns_on_debug(tmp_path: Path) -> None:
    with SimulatedPACS() as sim:
        doc = {"targets": [sim.endpoint_config("pacs-sim")]}
        plain = probe_once(tmp_path, doc, {})
        debug = probe_once(tmp_path, doc, {"DEBUG_SECTRA": "true"})
    assert " DEBUG " not in plain
    assert " DEBUG " in debug


@pytest.mark.parametrize("how", ["flag", "config"])
def test_json_lines(tmp_path: Path, how: str) -> None:
    with SimulatedPACS() as sim:
        doc: dict[str, Any] = {"targets": targets(sim)}
        args: tuple[str, ...] = ()
        if how == "flag":
            args = ("--log-format", "json")
        else:
            doc["agent"] = {"logFormat": "json"}
        err = probe_once(tmp_path, doc, {"TRACE_SECTRA": "true"}, *args)
    lines = [json.loads(ln) for ln in err.splitlines() if ln.strip()]  # every line is JSON
    runs = [x for x in lines if x["logger"] == "agent.trace"]
    assert len(runs) == 6
    failed = next(x for x in runs if x["target"] == "pacs-down")
    assert failed["probe"] == "dicom_echo" and failed["reason"] == "refused"
    assert failed["outcome"] == "FAILURE" and isinstance(failed["duration_ms"], float)
    ok = next(x for x in runs if x["target"] == "pacs-sim" and x["probe"] == "dicom_echo")
    assert ok["outcome"] == "SUCCESS" and "reason" not in ok and ok["duration_ms"] > 0


def test_json_lines_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    setup_logging("INFO", Redactor({"hunter2-secret"}), "json", env={})
    log = logging.getLogger("agent.test")
    log.info("connecting with password %s", "hunter2-secret", extra={"target": "pacs-a"})
    try:
        raise ValueError("bad token hunter2-secret")
    except ValueError:
        log.exception("failed")
    logging.getLogger().handlers[0].flush()
    out = buf.getvalue()
    lines = [json.loads(ln) for ln in out.splitlines()]
    assert "hunter2-secret" not in out
    assert lines[0]["message"] == "connecting with password <redacted>"
    assert lines[0]["target"] == "pacs-a"
    assert "<redacted>" in lines[1]["exception"]
    logging.basicConfig(force=True)  # leave no handler on the captured buffer
