"""Redaction masks secrets where they stand as values and never corrupts output.

It used to be a plain substring replace over whole outputs: a one-character password turned
`probe --once --output json` into invalid JSON, a password "status" renamed JSON keys and short
secrets mangled target names in logs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.redaction import MASK, Redactor
from agent.simulator import SimulatedPACS
from tests.test_cli_once import agent, local_copy

ROOT = Path(__file__).resolve().parents[1]


def test_long_secrets_are_masked_anywhere_short_ones_only_as_whole_tokens() -> None:
    r = Redactor(["s3cr3t-Value-42", "status", "1"])
    assert r.scrub("token=s3cr3t-Value-42;") == f"token={MASK};"
    assert r.scrub("xs3cr3t-Value-42x") == f"x{MASK}x"
    assert r.scrub("dimse_status of target status-page") == "dimse_status of target status-page"
    assert r.scrub("password is status.") == f"password is {MASK}."
    assert r.scrub("ids status.a and a.status") == "ids status.a and a.status"
    assert r.scrub("http://svc:1@host/") == f"http://svc:{MASK}@host/"
    assert r.scrub("took 12.1 ms, 1 attempt") == f"took 12.1 ms, {MASK} attempt"
    assert r.scrub_values({"status": "1", "n": 1, "l": ["status"]}) == {
        "status": MASK,
        "n": 1,
        "l": [MASK],
    }


@pytest.fixture()
def sim():
    with SimulatedPACS() as s:
        yield s


@pytest.mark.parametrize("password", ["1", "status", '"'])
def test_probe_once_json_stays_valid_with_short_passwords(
    tmp_path: Path, sim: SimulatedPACS, password: str
) -> None:
    cfg = local_copy(tmp_path, sim)
    env = {"SECTRA_API_PASSWORD": password, "SECTRA_API_KEY": password}
    r = agent("probe", "--once", "--config", str(cfg), "--output", "json", env=env)
    assert r.returncode in (0, 1, 2), r.stderr
    doc = json.loads(r.stdout)  # the old blind replace made this invalid JSON ("1", '"')
    assert set(doc) >= {"status", "timestamp", "targets"}  # and renamed keys ("status")
    [t] = doc["targets"]
    assert t["id"] == "sectra-pacs-prod" and t["name"] == "Sectra PACS Production"
    assert [c["name"] for c in t["checks"]] == ["dicom_echo", "dicom_find", "api_ping", "viewer"]
    for check in t["checks"]:
        assert {"name", "status", "responseTime", "message"} <= set(check)
        assert isinstance(check["responseTime"], float | int | None)


SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    from agent.config import load_config_text
    from agent.logging_setup import setup_logging
    from agent.redaction import Redactor
    from agent.runner import run_probe
    from agent.targets import build_plan
    from probes.base import ProbeError, Reason

    doc = {"id": "sec-target", "config": {"host": "127.0.0.1", "port": 1,
           "credentials": {"username": "svc", "password": "${LONG}"}},
           "sectraConfig": {"customHeaders": {"Authorization": "${SHORT}"}},
           "healthCheck": {"interval": 60000, "timeout": 2000}}
    loaded = load_config_text(json.dumps(doc), "t.json")
    redactor = Redactor(loaded.secrets)
    setup_logging("DEBUG", redactor, sys.argv[1])
    long, short = sys.argv[2], sys.argv[3]
    log = logging.getLogger("agent.test")
    log.warning("login to %s as %s failed", "sec-target", long)          # an argument
    log.warning("header value %s, target %s", short, "sec-target-" + short)  # short: token only
    log.error(f"inline {long}")                                          # an f-string template
    try:
        raise ConnectionError(f"server said: bad password {long}")
    except ConnectionError:
        log.exception("probe failed")                                    # exception text

    class Crashing:
        def run(self, deadline, phases):
            raise RuntimeError(f"crash with {long}")

    class Failing:
        def run(self, deadline, phases):
            raise ProbeError(Reason.REJECTED, f"rejected credentials {long}")

    plan = build_plan(loaded.model.targets[0])
    plan.probes = {"dicom_echo": Crashing(), "dicom_find": Failing()}
    crashed = run_probe(plan, "dicom_echo", redactor=redactor)
    failed = run_probe(plan, "dicom_find", redactor=redactor)
    print(json.dumps({"crashed": crashed.message, "failed": failed.message}))
    """
)

LONG = "Zq81-long-secret-value"
SHORT = "xy7"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_env_secrets_in_log_records_and_probe_exceptions_are_redacted(fmt: str) -> None:
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, fmt, LONG, SHORT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"LONG": LONG, "SHORT": SHORT, "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert LONG not in r.stdout + r.stderr
    assert "login to sec-target as <redacted> failed" in r.stderr
    assert "inline <redacted>" in r.stderr
    assert "bad password <redacted>" in r.stderr  # the traceback, scrubbed
    assert "crash with <redacted>" in r.stderr  # the runner's crash log line
    # a short secret is masked as a value, not inside a name
    assert "header value <redacted>, target sec-target-xy7" in r.stderr
    results = json.loads(r.stdout)
    assert results["failed"] == "rejected credentials <redacted>"
    assert LONG not in results["crashed"]
