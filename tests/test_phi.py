"""No patient data ever leaves the agent.

A C-FIND SCP answers the canary query with real-looking identifiers: names, patient ids, birth
dates, a referring physician, a study UID. They cross the wire into the agent, which must count
and check them and then drop them: no trace in `probe --once` output (table and JSON, with debug
logging), in /health, /metrics or the daemon's DEBUG log, nor in error messages, also when the
returned identifiers do not match the query (unexpected_result).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
from pydicom.dataset import Dataset

from tests.helpers.daemon import start_agent
from tests.helpers.dicom_scp import DicomSCP, study
from tests.helpers.peers import wait_until

ROOT = Path(__file__).resolve().parents[1]
CANARY_ACCESSION = "CANARY-ACC-0001"
PHI_UID = "1.2.826.0.1.3680043.10.1082.77.7731"
CANARY_UID = "1.2.826.0.1.3680043.10.1082.77.1"
# Malformed values (a UID with letters, a date that is not a date): pydicom's value validation
# would quote them in a warning, i.e. in the agent's log and on its stderr.
BAD_UID = "1.2.PHI.UID.8842"
BAD_DATE = "PHI19530317"
PHI = (
    "DOE^JANE",
    "JANE",
    "PHI-7731-UNIQUE",
    "19610412",
    PHI_UID,
    "HOUSE^GREGORY",
    "GREGORY",
    "PHI-OTHER-99812",
    "ROE^RICHARD",
    "RICHARD",
    "PHI-5521-OTHER",
    "19440229",
    "ACC-PHI-5521",
    BAD_UID,
    "PHI.UID",
    BAD_DATE,
    "19530317",
    "MOE^MARGARET",
    "MARGARET",
)


def phi_study(
    pid: str, name: str, birth: str, *, accession: str, uid: str | None = None
) -> Dataset:
    ds = study(pid, name, study_uid=uid, accession=accession, study_date="20260115")
    ds.PatientBirthDate = birth
    ds.PatientSex = "F"
    ds.OtherPatientIDs = "PHI-OTHER-99812"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    return ds


def find_target(tid: str, port: int, **query: Any) -> dict[str, Any]:
    return {
        "id": tid,
        "config": {"host": "127.0.0.1", "port": port, "calledAET": "TEST_PACS"},
        "healthCheck": {"interval": 2000, "timeout": 2000, "failureThreshold": 1},
        "probes": {
            "dicom_find": query or {"accessionNumber": CANARY_ACCESSION, "expectedCount": 1}
        },
        "monitoring": {"logLevel": "DEBUG"},
    }


def assert_no_phi(where: str, text: str) -> None:
    leaked = [m for m in PHI if m in text]
    assert not leaked, f"{where} contains patient data: {leaked}"


def malformed_study() -> Dataset:
    ds = phi_study("PHI-5521-OTHER", "MOE^MARGARET", "19440229", accession="ACC-PHI-5521")
    with warnings.catch_warnings():  # our SCP writes what a broken PACS would send
        warnings.simplefilter("ignore")
        ds.StudyInstanceUID = BAD_UID
        ds.StudyDate = BAD_DATE
    return ds


class Pacs:
    """Three SCPs: one answers the canary correctly (with PHI), one returns PHI that does not
    match the query (a PACS ignoring the query keys), one returns malformed identifiers."""

    def __init__(self) -> None:
        self.good = DicomSCP(
            [
                phi_study(
                    "PHI-7731-UNIQUE",
                    "DOE^JANE",
                    "19610412",
                    accession=CANARY_ACCESSION,
                    uid=PHI_UID,
                )
            ]
        )
        self.bad = DicomSCP(
            [phi_study("PHI-5521-OTHER", "ROE^RICHARD", "19440229", accession="ACC-PHI-5521")],
            ignore_query=True,
        )
        self.odd = DicomSCP([malformed_study()], ignore_query=True)
        self.all = (self.good, self.bad, self.odd)

    def __enter__(self) -> Pacs:
        for scp in self.all:
            scp.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for scp in self.all:
            scp.stop()

    def queried(self, n: int) -> bool:
        return all(scp.find_count >= n for scp in self.all)

    def config(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "targets": [
                        find_target("phi-match", self.good.port),
                        find_target("phi-mismatch", self.bad.port),
                        find_target(
                            "phi-malformed",
                            self.odd.port,
                            studyInstanceUID=CANARY_UID,
                            studyDate="20260101-20261231",
                            expectedCount=1,
                        ),
                    ],
                    "agent": {"selfProbe": {"enabled": False}},
                }
            )
        )
        return path


def agent(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def check_results(doc: dict[str, Any]) -> None:
    """The runs really happened: the canary matched once, the mismatching PACS was caught."""
    checks = {(t["id"], c["name"]): c for t in doc["targets"] for c in t["checks"]}
    good, bad = checks[("phi-match", "dicom_find")], checks[("phi-mismatch", "dicom_find")]
    odd = checks[("phi-malformed", "dicom_find")]
    assert good["status"] == "PASS" and good["matches"] == 1, good
    for c in (bad, odd):
        assert c["status"] == "FAIL" and c["reason"] == "unexpected_result", c
        assert "does not satisfy the query" in c["message"]


def test_once_output_and_debug_log_hold_no_phi(tmp_path: Path) -> None:
    with Pacs() as pacs:
        cfg = pacs.config(tmp_path / "phi.json")
        as_json = agent("probe", "--once", "--config", str(cfg), "--output", "json", "-v")
        as_table = agent("probe", "--once", "--config", str(cfg), "--output", "table", "-v")
        assert pacs.queried(2)  # PHI did cross the wire
    assert as_json.returncode == 2, as_json.stderr  # one target UNHEALTHY
    check_results(json.loads(as_json.stdout))
    assert "phi-mismatch" in as_table.stdout and "unexpected_result" in as_table.stdout
    # -v: the log runs at DEBUG (it holds the failure's WARNING, and nothing identifying)
    assert "does not satisfy the query" in as_json.stderr
    for where, text in (
        ("JSON output", as_json.stdout),
        ("table output", as_table.stdout),
        ("--once debug log (json)", as_json.stderr),
        ("--once debug log (table)", as_table.stderr),
    ):
        assert_no_phi(where, text)


def test_daemon_health_metrics_and_debug_log_hold_no_phi(tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with Pacs() as pacs, log.open("w") as err:
        cfg = pacs.config(tmp_path / "phi.json")
        # the agent binds port 0 and prints its URL: no released port to race for
        p, url = start_agent(["--config", str(cfg), "-v"], stderr=err, env=env, cwd=ROOT)
        try:
            with httpx.Client(timeout=2) as c:

                def both_ran() -> dict[str, Any] | None:
                    try:
                        doc = c.get(url + "/health").json()
                    except (httpx.HTTPError, ValueError):
                        return None
                    done = {
                        t["id"]
                        for t in doc["targets"]
                        for ch in t["checks"]
                        if ch["name"] == "dicom_find" and ch["status"] != "PENDING"
                    }
                    return doc if done == {"phi-match", "phi-mismatch", "phi-malformed"} else None

                wait_until(both_ran, 15)
                wait_until(lambda: pacs.queried(2), 10)
                health = c.get(url + "/health").text
                metrics = c.get(url + "/metrics").text
                status = c.get(url + "/").text
            p.send_signal(signal.SIGTERM)
            assert p.wait(10) == 0
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    text = log.read_text() + "".join(getattr(p, "stdout_lines", []))
    check_results(json.loads(health))
    assert "DEBUG" in text and "does not satisfy the query" in text
    for where, body in (
        ("/health", health),
        ("/metrics", metrics),
        ("/", status),
        ("daemon log at DEBUG", text),
    ):
        assert_no_phi(where, body)
