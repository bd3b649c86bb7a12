"""One PACS outage pages once.

A PACS stops answering: every check fails, the target goes UNHEALTHY, the failover check FAILs,
its certificate is two days from expiry. promtool evaluates every alert of alerts/ on that
outage; exactly one alert with severity page may fire (PacsTargetUnhealthy), the per-check alerts
that say which check is down fire as tickets, everything else stays silent.

The rules are evaluated with their annotations removed (a copy in tmp_path), so this test is about
what fires and with which labels, not about wording.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.promserver import find_promtool

REPO = Path(__file__).resolve().parent.parent
RULE_FILES = sorted((REPO / "alerts").glob("*.yml"))
BASE = {"job": "pacs-health-agent", "instance": "agent-1:9887"}
TARGET = {**BASE, "target": "pacs-prod"}
EVAL = "30m"

# (metric, extra labels, promtool values over 40 one-minute steps: down from minute 1)
OUTAGE: list[tuple[str, dict[str, str], str]] = [
    ("up", {}, "1x40"),
    ("pacs_agent_targets", {}, "1x40"),
    ("pacs_target_health", {"state": "HEALTHY"}, "1 0x39"),
    ("pacs_target_health", {"state": "DEGRADED"}, "0x40"),
    ("pacs_target_health", {"state": "UNHEALTHY"}, "0 1x39"),
    ("pacs_target_health", {"state": "UNKNOWN"}, "0x40"),
    ("probe_success", {"probe": "dicom_echo"}, "1 0x39"),
    ("probe_success", {"probe": "dicom_find"}, "1 0x39"),
    ("probe_success", {"probe": "dicom_retrieve"}, "1 0x39"),
    ("probe_success", {"probe": "dicom_store"}, "1 0x39"),
    ("pacs_check_status", {"probe": "dicom_echo", "status": "FAIL"}, "0 1x39"),
    ("pacs_check_status", {"probe": "failover", "status": "FAIL"}, "0 1x39"),
    ("pacs_probe_runs_total", {"probe": "dicom_echo", "result": "success"}, "100+0x40"),
    ("pacs_probe_runs_total", {"probe": "dicom_echo", "result": "failure"}, "0+2x40"),
    ("probe_ssl_earliest_cert_expiry", {"probe": "api_ping"}, "172800x40"),
    ("pacs_target_degraded_latency_seconds", {}, "2x40"),
    ("pacs_target_cert_expiry_warning_seconds", {}, "1209600x40"),
]

# What fires during the outage, with its labels. Exactly one page.
EXPECTED: dict[str, list[dict[str, str]]] = {
    "PacsTargetUnhealthy": [{**TARGET, "state": "UNHEALTHY", "severity": "page"}],
    "PacsDicomEchoFailing": [{**TARGET, "probe": "dicom_echo", "severity": "ticket"}],
    "PacsDicomRetrieveFailing": [{**TARGET, "probe": "dicom_retrieve", "severity": "ticket"}],
    "PacsDicomStoreFailing": [{**TARGET, "probe": "dicom_store", "severity": "ticket"}],
    "PacsAllEndpointsDown": [
        {**TARGET, "probe": "failover", "status": "FAIL", "severity": "ticket"}
    ],
    "PacsProbeAvailabilityLow": [
        {
            "job": "pacs-health-agent",
            "target": "pacs-prod",
            "probe": "dicom_echo",
            "severity": "ticket",
        }
    ],
}


def _series(name: str, labels: dict[str, str]) -> str:
    base = BASE if name in ("up", "pacs_agent_targets") else TARGET
    inner = ", ".join(f'{k}="{v}"' for k, v in {**base, **labels}.items())
    return f"{name}{{{inner}}}"


def _without_annotations(tmp: Path) -> tuple[list[str], list[str]]:
    files, alerts = [], []
    for path in RULE_FILES:
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                rule.pop("annotations", None)
                if "alert" in rule:
                    alerts.append(rule["alert"])
        out = tmp / path.name
        out.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(str(out))
    return files, alerts


def _promtool_test(tmp: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    files, alerts = _without_annotations(tmp)
    tests = [
        {
            "eval_time": EVAL,
            "alertname": a,
            "exp_alerts": [{"exp_labels": labels} for labels in EXPECTED.get(a, [])],
        }
        for a in alerts
    ]
    doc = {
        "rule_files": files,
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "fires: one PACS outage, one page",
                "interval": "1m",
                "input_series": [
                    {"series": _series(n, labels), "values": values} for n, labels, values in OUTAGE
                ],
                "alert_rule_test": tests,
            }
        ],
    }
    test_file = tmp / "outage.test.yml"
    test_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = subprocess.run(
        [find_promtool(), "test", "rules", str(test_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r, doc


def test_an_outage_pages_once(tmp_path: Path) -> None:
    r, doc = _promtool_test(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    asserted = {t["alertname"] for t in doc["tests"][0]["alert_rule_test"]}
    assert set(EXPECTED) <= asserted  # every expected alert exists in the rules
    pages = [
        a
        for t in doc["tests"][0]["alert_rule_test"]
        for a in t["exp_alerts"]
        if a["exp_labels"]["severity"] == "page"
    ]
    assert len(pages) == 1 and pages[0]["exp_labels"]["state"] == "UNHEALTHY"


def test_the_check_alerts_are_not_pages() -> None:
    """The per-check alerts that accompany an outage carry severity ticket in the rules."""
    severities = {}
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    severities[rule["alert"]] = rule["labels"]["severity"]
    for name in ("PacsDicomEchoFailing", "PacsDicomFindFailingEchoOk", "PacsAllEndpointsDown"):
        assert severities[name] == "ticket", name
    assert severities["PacsTargetUnhealthy"] == "page"
