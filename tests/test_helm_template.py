"""`make helm-template` and the chart's runbookBaseURL, rendered offline by real Helm
(helm-python-sdk) as the newcomer's path in helm/pacs-health-agent/README.md does it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import helm_template  # noqa: E402 - scripts/ is not a package

BASE = "https://git.hospital.example/it/pacs-health-agent/-/blob/main/docs/runbooks.md"
ON = {"prometheusRule": {"enabled": True}, "dashboards": {"enabled": True}}


def docs(values: dict[str, Any]) -> list[dict[str, Any]]:
    files = helm_template.render(values, "pha", "pacs-monitoring")
    return [
        d
        for name, text in files.items()
        if not name.endswith("NOTES.txt")
        for d in yaml.safe_load_all(text)
        if d
    ]


def runbook_links(documents: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    rules = next(d for d in documents if d["kind"] == "PrometheusRule")
    alert_urls = [
        r["annotations"]["runbook_url"]
        for g in rules["spec"]["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    dash_urls = []
    for d in documents:
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(
            "pha-pacs-health-agent-dashboard"
        ):
            for text in d["data"].values():
                dash_urls += [
                    link["url"] for link in json.loads(text)["links"] if link["title"] == "Runbooks"
                ]
    return alert_urls, dash_urls


def test_runbook_base_url_sets_every_link() -> None:
    alerts, dashboards = runbook_links(docs({**ON, "runbookBaseURL": BASE}))
    assert len(alerts) >= 14 and len(dashboards) == 2
    assert all(u.startswith(BASE + "#pacs") for u in alerts), alerts
    assert all(u == BASE for u in dashboards)


def test_default_links_are_the_relative_runbook_page() -> None:
    alerts, dashboards = runbook_links(docs(ON))
    assert all(u.startswith("docs/runbooks.md#pacs") for u in alerts)
    assert dashboards == ["docs/runbooks.md", "docs/runbooks.md"]


def test_runbook_base_url_must_be_a_url() -> None:
    with pytest.raises(helm.HelmValuesError):
        docs({"runbookBaseURL": "javascript:alert(1)"})


def check_config(config: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(line.split("=", 1) for line in env_file.read_text().splitlines() if line)
    return subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--no-file-checks", "--config", "-"],
        stdin=config.open(),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_rendered_config_goes_through_check_config(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"runbookBaseURL": BASE, **ON}))
    out, env_file, config = tmp_path / "m.yaml", tmp_path / "m.env", tmp_path / "config.yaml"
    argv = ["--values", str(values), "--out", str(out), "--env-out", str(env_file)]
    with config.open("w") as fh:
        p = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "helm_template.py"), *argv],
            stdout=fh,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert p.returncode == 0, p.stderr
    assert "kind: PrometheusRule" in out.read_text()
    assert "SECTRA_API_KEY=placeholder" in env_file.read_text()
    ok = check_config(config, env_file)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("# -: valid")


def test_a_bad_target_in_the_values_fails_the_check(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "config": {
                    "targets": [
                        {"id": "pacs-x", "config": {"host": "pacs.example.org", "port": 70000}}
                    ]
                }
            }
        )
    )
    env_file, config = tmp_path / "m.env", tmp_path / "config.yaml"
    with config.open("w") as fh:
        p = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "helm_template.py"),
                "--values",
                str(values),
                "--out",
                str(tmp_path / "m.yaml"),
                "--env-out",
                str(env_file),
            ],
            stdout=fh,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    assert p.returncode == 0, p.stderr
    bad = check_config(config, env_file)
    assert bad.returncode == 3 and "port" in bad.stderr


def test_the_make_target_renders_and_checks(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(ON))
    out = tmp_path / "rendered.yaml"
    # -o: the venv is there (this test runs in it); never let make reinstall it
    p = subprocess.run(
        [
            "make",
            "-s",
            "-o",
            ".venv/.installed",
            "helm-template",
            f"VALUES={values}",
            f"HELM_OUT={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert "valid; 1 target(s)" in p.stdout and "kind: Deployment" in out.read_text()


def agent_section(values: dict[str, Any]) -> dict[str, Any]:
    cm = next(d for d in docs(values) if d["kind"] == "ConfigMap"
              and "config.yaml" in d.get("data", {}))
    return yaml.safe_load(cm["data"]["config.yaml"]).get("agent") or {}


def test_metrics_classic_histogram_writes_the_agent_setting() -> None:
    assert "metrics" not in agent_section({})  # off: the agent's own default (off) applies
    on = agent_section({"metrics": {"classicHistogram": True}})
    assert on["metrics"] == {"classicHistogram": True}
    assert on["logLevel"] == "INFO"  # the rest of config.agent is kept
    with pytest.raises(helm.HelmValuesError):
        docs({"metrics": {"classicHistogram": "yes"}})
