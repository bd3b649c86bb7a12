"""Alerting and recording rules: promtool checks, unit-test coverage, runbooks, the contract.

Every alert needs, in alerts/tests/*.yml, a test group named "fires: ..." in which it fires, a
"blip: ..." group in which it stays silent and a "healthy: ..." group in which it stays silent.
With every `for:` removed, each alert's blip group must fail (so the blip is really shorter than
the `for:`, not just below the threshold) and the healthy groups must still pass.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.promserver import (
    TARGET_LABELS,
    PromServer,
    SyntheticAgentMetrics,
    bare_metric_uses,
    documented_metrics,
    find_promtool,
    prewarm_synthetic_prometheus,  # noqa: F401 - autouse pytest fixture
    selectors,
    supervisor_metrics,
    synthetic_prometheus,  # noqa: F401 - pytest fixture
)

REPO = Path(__file__).resolve().parent.parent
ALERTS_DIR = REPO / "alerts"
RULE_FILES = sorted(ALERTS_DIR.glob("*.yml"))
UNIT_TEST_FILES = sorted((ALERTS_DIR / "tests").glob("*.yml"))
RUNBOOK = REPO / "docs" / "runbooks.md"
# Relative by default (the chart's runbookBaseURL turns it into an absolute URL).
RUNBOOK_PREFIX = "docs/runbooks.md#"
JOB_MATCHER = ("=~", "pacs-health-agent.*")
SEVERITIES = {"page", "ticket", "warning"}
KINDS = ("fires", "blip", "healthy")
RECORDED_NAME = re.compile(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+")


# libyaml when available: the pure-Python parser is slow enough to matter here.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@functools.cache
def _parse_yaml(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=LOADER)


def load_yaml(path: Path) -> Any:
    """Parsed YAML file (cached; a copy, safe to modify)."""
    return copy.deepcopy(_parse_yaml(path))


def load_rules() -> list[dict[str, Any]]:
    """All rules of all rule files, each with its file and group name added."""
    rules = []
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            for rule in group["rules"]:
                rules.append({**rule, "_file": path.name, "_group": group["name"]})
    return rules


RULES = load_rules()
ALERTS = {r["alert"]: r for r in RULES if "alert" in r}
RECORDS = {r["record"]: r for r in RULES if "record" in r}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_promtool(), *args], capture_output=True, text=True, timeout=60)


def promtool_parallel(*arg_lists: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Run several promtool invocations at once (unit tests are CPU-bound, one core each)."""
    find_promtool()  # fail clearly before starting threads
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda args: promtool(*args), arg_lists))


def duration_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)([smhd])", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"unsupported duration {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


def github_anchor(heading: str) -> str:
    """The anchor GitHub generates for a Markdown heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_sections() -> dict[str, str]:
    """{anchor: section text} for every heading of docs/runbooks.md."""
    sections: dict[str, str] = {}
    current = None
    in_code = False
    for line in RUNBOOK.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            current = github_anchor(m.group(1))
            assert current not in sections, f"duplicate runbook anchor #{current}"
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


def unit_test_groups() -> list[tuple[Path, dict[str, Any]]]:
    """(file, test group) of every promtool unit test group; copies, safe to modify."""
    return [(path, group) for path in UNIT_TEST_FILES for group in load_yaml(path)["tests"]]


def evaluation_interval(path: Path) -> str:
    return load_yaml(path).get("evaluation_interval", "1m")


def group_kind(group: dict[str, Any]) -> str | None:
    name = group.get("name", "")
    kind = name.split(":", 1)[0]
    return kind if kind in KINDS else None


def coverage() -> dict[str, dict[str, list[str]]]:
    """{alert: {kind: [group names]}}: "fires" groups where it is expected to fire, "blip" and
    "healthy" groups where it is expected silent."""
    cov: dict[str, dict[str, list[str]]] = {a: {k: [] for k in KINDS} for a in ALERTS}
    for _path, group in unit_test_groups():
        kind = group_kind(group)
        for case in group.get("alert_rule_test", []):
            alert = case["alertname"]
            if alert not in cov or kind is None:
                continue
            fires = bool(case.get("exp_alerts"))
            if (kind == "fires") == fires:
                cov[alert][kind].append(group["name"])
    return cov


# ---------------------------------------------------------------------- promtool
def test_rule_files_exist() -> None:
    names = {p.name for p in RULE_FILES}
    assert {"pacs-health-agent.alerts.yml", "pacs-health-agent.recording.yml"} <= names
    assert UNIT_TEST_FILES, "no promtool unit tests in alerts/tests/"
    assert len(ALERTS) >= 14 and RECORDS


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(RULE_FILES), result.stdout


def test_promtool_unit_tests_pass() -> None:
    results = promtool_parallel(*(["test", "rules", str(path)] for path in UNIT_TEST_FILES))
    for path, result in zip(UNIT_TEST_FILES, results, strict=True):
        assert result.returncode == 0, f"{path.name}:\n{result.stdout}{result.stderr}"
        assert "SUCCESS" in result.stdout, result.stdout


def test_unit_test_groups_are_named_by_kind() -> None:
    for path, group in unit_test_groups():
        if "alert_rule_test" in group:
            assert group_kind(group), (
                f"{path.name}: group {group.get('name')!r} must be named 'fires: ...', "
                "'blip: ...' or 'healthy: ...'"
            )


def test_every_alert_fires_ignores_blips_and_stays_silent_when_healthy() -> None:
    missing = [
        f"{alert}: no {kind!r} case"
        for alert, kinds in coverage().items()
        for kind, groups in kinds.items()
        if not groups
    ]
    assert not missing, "\n".join(missing)


def test_unit_tests_only_name_existing_alerts() -> None:
    for path, group in unit_test_groups():
        for case in group.get("alert_rule_test", []):
            assert case["alertname"] in ALERTS, f"{path.name}: unknown alert {case['alertname']}"


def _rules_without_for(tmp_path: Path, name: str, groups: list[dict[str, Any]]) -> Path:
    """One rule file holding, with `for:` removed, only the alerts these test groups name (and
    the recording rules if one of them reads recorded series): promtool's cost is per rule and
    evaluation step, and the other alerts cannot change these groups' outcome."""
    wanted = {case["alertname"] for g in groups for case in g.get("alert_rule_test", [])}
    rule_groups = []
    for path in RULE_FILES:
        for group in load_yaml(path)["groups"]:
            rules = [dict(r) for r in group["rules"] if r.get("alert") in wanted]
            for rule in rules:
                rule.pop("for", None)
            if rules:
                rule_groups.append({"name": group["name"], "rules": rules})
    if any(RECORDED_NAME.search(ALERTS[a]["expr"]) for a in wanted):
        for path in RULE_FILES:
            for group in load_yaml(path)["groups"]:
                rules = [r for r in group["rules"] if "record" in r]
                if rules:
                    rule_groups.insert(0, {**group, "rules": rules})
    out = tmp_path / f"{name}.rules.yml"
    out.write_text(yaml.dump({"groups": rule_groups}, Dumper=DUMPER, sort_keys=False))
    return out


def _test_file(tmp_path: Path, name: str, source: Path, groups: list[dict[str, Any]]) -> list[str]:
    path = tmp_path / f"{name}.test.yml"
    path.write_text(
        yaml.dump(
            {
                "rule_files": [str(_rules_without_for(tmp_path, name, groups))],
                "evaluation_interval": evaluation_interval(source),
                "tests": groups,
            },
            Dumper=DUMPER,
            sort_keys=False,
        )
    )
    return ["test", "rules", str(path)]


def test_blips_are_silenced_by_for_not_by_the_threshold(tmp_path: Path) -> None:
    blips = [(p, g) for p, g in unit_test_groups() if group_kind(g) == "blip"]
    runs = [
        _test_file(tmp_path, f"blip-{i}", source, [group])
        for i, (source, group) in enumerate(blips)
    ]
    needed = {alert: set(kinds["blip"]) for alert, kinds in coverage().items()}
    proven: set[str] = set()
    for (_source, group), result in zip(blips, promtool_parallel(*runs), strict=True):
        assert "FAILED" in result.stderr or result.returncode == 0, result.stderr
        failed_alerts = set(re.findall(r"alertname: (\w+), time:", result.stderr))
        for alert, blip_names in needed.items():
            if group["name"] in blip_names and alert in failed_alerts:
                proven.add(alert)
    unproven = sorted(set(ALERTS) - proven)
    assert not unproven, (
        "these alerts' blip cases stay silent even without `for:` (make the blip cross the "
        f"threshold, for less than the `for:`, at an eval_time): {unproven}"
    )


def test_healthy_cases_are_silent_even_without_for(tmp_path: Path) -> None:
    runs = []
    for i, source in enumerate(UNIT_TEST_FILES):
        groups = [g for p, g in unit_test_groups() if p == source and group_kind(g) == "healthy"]
        if groups:
            runs.append(_test_file(tmp_path, f"healthy-{i}", source, groups))
    assert runs
    for result in promtool_parallel(*runs):
        assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------- alert metadata
@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_metadata(name: str) -> None:
    rule = ALERTS[name]
    assert rule["labels"]["severity"] in SEVERITIES
    assert set(rule["annotations"]) >= {"summary", "description", "runbook_url"}
    assert duration_seconds(rule["for"]) >= 60, "every alert needs a `for:` of at least 1m"
    assert rule["annotations"]["runbook_url"] == RUNBOOK_PREFIX + name.lower()


def test_runbook_anchors_exist_and_explain_for() -> None:
    sections = runbook_sections()
    for name, rule in ALERTS.items():
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor in sections, f"{name}: no heading with anchor #{anchor} in {RUNBOOK}"
        text = sections[anchor]
        for part in (
            "**Meaning.**",
            "**Confirm.**",
            "**Likely causes.**",
            "**What to do.**",
            f"**Why `for: {rule['for']}`.**",
        ):
            assert part in text, f"runbook section #{anchor} lacks {part}"
        assert "agent probe --once" in text, f"#{anchor}: show how agent probe --once confirms it"
        assert f"`{rule['labels']['severity']}`" in text, f"#{anchor}: state the severity"


def test_runbook_explains_the_probe_exit_codes() -> None:
    text = RUNBOOK.read_text()
    assert "--output json" in text
    for code, state in ((0, "HEALTHY"), (1, "DEGRADED"), (2, "UNHEALTHY"), (3, "UNKNOWN")):
        assert re.search(rf"\|\s*{code}\s*\|\s*{state}", text), f"exit code {code} {state}"


def test_runbook_has_no_section_for_a_missing_alert() -> None:
    stale = [
        a
        for a in runbook_sections()
        if a.startswith("pacs") and a not in {n.lower() for n in ALERTS}
    ]
    assert not stale, f"runbook sections without an alert: {stale}"


# ---------------------------------------------------------------------- the metrics contract
def test_rules_use_documented_metrics_labels_and_the_job_selector() -> None:
    # the supervisor's own families (agent run --workers N) are listed outside the table
    documented = documented_metrics() | supervisor_metrics()
    # ALERTS: the burn-rate pages read whether PacsTargetUnhealthy fired (one page per outage)
    raw = set(documented) | {"up", "ALERTS"}
    for rule in RULES:
        name = rule.get("alert") or rule.get("record")
        expr = rule["expr"]
        assert not bare_metric_uses(expr, raw), f"{name}: raw metric without a job matcher"
        for metric, matchers in selectors(expr):
            if metric in RECORDS:
                continue
            assert metric in raw, f"{name}: {metric} is not in docs/metrics.md"
            allowed = TARGET_LABELS | (
                documented[metric]["labels"]
                if metric not in ("up", "ALERTS")
                else {"alertname", "alertstate"}
                if metric == "ALERTS"
                else set()
            )
            assert set(matchers) <= allowed, f"{name}: {metric} has no label {set(matchers)}"
            assert matchers.get("job") == JOB_MATCHER, (
                f'{name}: select {metric} with job=~"pacs-health-agent.*"'
            )


def test_recorded_series_used_by_alerts_are_defined() -> None:
    for name, rule in ALERTS.items():
        for used in RECORDED_NAME.findall(rule["expr"]):
            assert used in RECORDS, f"{name} reads {used}, which no recording rule defines"


def test_recording_rule_names_follow_level_metric_operations() -> None:
    for name in RECORDS:
        assert re.fullmatch(r"[a-z_]+:pacs_[a-z0-9_]+:[a-z0-9_]+", name), name


# ---------------------------------------------------------------------- a real Prometheus
def test_rules_on_a_real_prometheus_scraping_agent_shaped_metrics(
    synthetic_prometheus: PromServer,  # noqa: F811 - the imported fixture
) -> None:
    """The rules loaded into Prometheus 2.x scraping synthetic agent output: every rule evaluates
    without error, every recording rule produces series, and exactly the alerts the data calls
    for become active (pending: their `for:` is minutes)."""
    prom = synthetic_prometheus

    def active() -> set[tuple[str, str]]:
        return {(a["labels"]["alertname"], a["labels"].get("target", "")) for a in prom.alerts()}

    prom.wait_for(
        lambda: active() == SyntheticAgentMetrics.EXPECTED_ACTIVE_ALERTS,
        timeout=30,
        message="exactly the expected alerts active",
    )
    for record in RECORDS:
        assert prom.query(record), f"recording rule {record} produced no series"
    loaded = set()
    for group in prom.rules():
        for rule in group["rules"]:
            loaded.add(rule["name"])
            assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
    assert loaded == set(ALERTS) | set(RECORDS)
    # The server is shared by the session, so an alert may have been active for longer than its
    # `for:` by now: each must be pending before its `for:` has passed and firing after it (one
    # evaluation interval either side is in flight).
    now = datetime.now(UTC)
    for a in prom.alerts():
        hold = _seconds(ALERTS[a["labels"]["alertname"]].get("for", "0s"))
        since = datetime.fromisoformat(a["activeAt"].replace("Z", "+00:00"))
        active_for = (now - since).total_seconds()
        if active_for < hold - 2:
            assert a["state"] == "pending", (a["labels"], active_for, hold)
        elif active_for > hold + 2:
            assert a["state"] == "firing", (a["labels"], active_for, hold)


def _seconds(duration: str) -> float:
    """A Prometheus duration of one unit (`5m`, `1h`, `30s`) in seconds."""
    m = re.fullmatch(r"(\d+)([smhd])", duration)
    assert m, duration
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
