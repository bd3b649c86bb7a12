"""Error-budget rules (alerts/pacs-health-agent.slo.yml): their promtool unit tests are the
generator's output and pass, every burn-rate alert is tested at and just below its factor for
both SLIs, objectives come from pacs_slo_objective_ratio, maintenance silences them, and the
Helm chart's PrometheusRule carries them. tests/test_alerts.py covers what all rules share
(promtool check, runbooks, blips silenced by `for:`, a real Prometheus)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helpers.promserver import find_promtool

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "alerts" / "pacs-health-agent.slo.yml"
TESTS_DIR = REPO / "alerts" / "tests"
GENERATOR = TESTS_DIR / "generate_slo_tests.py"
BURN = {
    "PacsErrorBudgetBurnFast": ("14.4", "1h", "5m", "page"),
    "PacsErrorBudgetBurnMedium": ("6", "6h", "30m", "page"),
    "PacsErrorBudgetBurnSlow": ("1", "3d", "6h", "ticket"),
}
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_slo_tests", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in rules() if "alert" in r}


def unit_groups() -> list[dict[str, Any]]:
    return [
        g for f in generator().files() for g in yaml.safe_load((TESTS_DIR / f).read_text())["tests"]
    ]


def test_committed_promtool_tests_are_the_generators_output() -> None:
    files = generator().files()
    assert set(files) == {"slo.test.yml", "slo-slow.test.yml"}
    for name, text in files.items():
        assert (TESTS_DIR / name).read_text() == text, (
            f"alerts/tests/{name} is stale: run python3 alerts/tests/generate_slo_tests.py"
        )


@pytest.mark.parametrize("name", ["slo.test.yml", "slo-slow.test.yml"])
def test_promtool_unit_tests_pass(name: str) -> None:
    result = subprocess.run(
        [find_promtool(), "test", "rules", str(TESTS_DIR / name)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_error_ratios_are_recorded_for_every_window() -> None:
    records = {r["record"] for r in rules() if "record" in r}
    for w in WINDOWS:
        assert f"target_probe_slo:pacs_slo_errors:ratio_rate{w}" in records
    assert "target_probe_slo:pacs_slo_error_budget_remaining:ratio30d" in records
    assert "target_probe_slo:pacs_slo_objective:ratio" in records


@pytest.mark.parametrize("name", sorted(BURN))
def test_burn_alert_reads_the_objective_and_honours_maintenance(name: str) -> None:
    factor, long, short, severity = BURN[name]
    rule = alerts()[name]
    expr = rule["expr"]
    assert rule["labels"]["severity"] == severity
    assert (rule["labels"]["long_window"], rule["labels"]["short_window"]) == (long, short)
    for w in (long, short):
        assert f"target_probe_slo:pacs_slo_errors:ratio_rate{w}\n" in expr
    assert expr.count("(1 - target_probe_slo:pacs_slo_objective:ratio)") == 2
    assert expr.count(f"> {factor}\n") == 2
    # the only numbers are the factor and the 1 of (1 - objective): no objective is written here
    numbers = set(re.findall(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])", expr))
    assert numbers <= {factor, "1"}, numbers
    assert re.search(
        r'unless on \(target\)\npacs_target_maintenance\{job=~"pacs-health-agent\.\*"\} == 1$',
        expr.strip(),
    ), expr


def test_every_burn_alert_is_tested_at_and_below_its_rate_for_both_slis() -> None:
    groups = unit_groups()
    for name, (factor, *_rest) in BURN.items():
        for slo in ("availability", "latency"):
            above = [
                g
                for g in groups
                if g["name"].startswith(f"fires: {slo}")
                and f"1 % above {factor} ({name})" in g["name"]
            ]
            below = [
                g
                for g in groups
                if g["name"].startswith(f"healthy: {slo}")
                and f"1 % below {factor} ({name})" in g["name"]
            ]
            assert len(above) == 1 and len(below) == 1, (name, slo)
            fired = [c for c in above[0]["alert_rule_test"] if c["exp_alerts"]]
            assert fired and all(
                a["exp_labels"]["slo"] == slo for c in fired for a in c["exp_alerts"]
            )
            assert all(not c["exp_alerts"] for c in below[0]["alert_rule_test"])


def test_maintenance_and_one_page_per_outage_are_tested() -> None:
    names = [g["name"] for g in unit_groups()]
    assert any("in maintenance does not page" in n for n in names)
    assert any("during maintenance spend no budget" in n for n in names)
    assert any("an outage pages once" in n for n in names)
    assert any("still spends budget" in n for n in names)


def test_helm_prometheus_rule_carries_the_slo_rules() -> None:
    from tests.test_helm import one, render_chart

    docs = render_chart({"prometheusRule": {"enabled": True}})
    groups = {g["name"]: g for g in one(docs, "PrometheusRule")["spec"]["groups"]}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        assert groups.get(group["name"]) == group, f"{group['name']} missing from the chart"
    rendered = {r.get("alert") for g in groups.values() for r in g["rules"]}
    assert set(BURN) <= rendered
