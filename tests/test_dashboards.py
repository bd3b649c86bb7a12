"""Grafana dashboards: structure, the generator, the metrics contract, and every query run
against a real Prometheus holding agent-shaped data."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helpers.promserver import (
    TARGET_LABELS,
    PromServer,
    bare_metric_uses,
    documented_metrics,
    prewarm_synthetic_prometheus,  # noqa: F401 - autouse pytest fixture
    selectors,
    synthetic_prometheus,  # noqa: F401 - pytest fixture
)

REPO = Path(__file__).resolve().parent.parent
DASH_DIR = REPO / "dashboards"
DASHBOARD_FILES = sorted(DASH_DIR.glob("*.json"))
REQUIRED = {"pacs-overview.json", "pacs-target.json"}
DS = {"type": "prometheus", "uid": "${datasource}"}
GRAFANA_BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "__range_s": "3600",
    "__url_time_range": "from=now-1h&to=now",
}
# Values the template variables take when the queries run against the synthetic data.
VARIABLE_VALUES = {"job": "pacs-health-agent", "target": "sim-pacs", "probe": ".*"}
VAR_REF = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def load_generator() -> ModuleType:
    return importlib.import_module("dashboards.generate")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for p in dashboard["panels"]:
        panels.append(p)
        panels.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return panels


def query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(dashboard) if p["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def substitute(text: str, values: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return values[name]

    return VAR_REF.sub(repl, text)


def expressions() -> list[tuple[str, str, str, str]]:
    """(file, panel title, refId, expr) of every query in every dashboard."""
    found = []
    for path in DASHBOARD_FILES:
        for p in query_panels(load(path)):
            for t in p["targets"]:
                found.append((path.name, p["title"], t["refId"], t["expr"]))
    return found


EXPRESSIONS = expressions()


def recorded_series() -> set[str]:
    names = set()
    for path in sorted((REPO / "alerts").glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


# ---------------------------------------------------------------------- files and generator
def test_dashboards_exist() -> None:
    assert REQUIRED <= {p.name for p in DASHBOARD_FILES}


def test_committed_json_is_the_generators_output() -> None:
    generator = load_generator()
    assert set(generator.DASHBOARDS) == {p.name for p in DASHBOARD_FILES}
    for name, build in generator.DASHBOARDS.items():
        committed = (DASH_DIR / name).read_text()
        assert committed == generator.render(build), (
            f"dashboards/{name} differs from the generator: run make generate"
        )
    assert generator.main(["--check"]) == 0


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_top_level(path: Path) -> None:
    d = load(path)
    assert 36 <= d["schemaVersion"] <= 41
    assert d["uid"] and len(d["uid"]) <= 40 and d["title"]
    assert d["id"] is None, "exported for import: no instance-specific id"
    assert "pacs-health-agent" in d["tags"]
    assert d["time"]["from"] and d["refresh"]


def test_dashboard_uids_and_titles_are_unique() -> None:
    dashboards = [load(p) for p in DASHBOARD_FILES]
    assert len({d["uid"] for d in dashboards}) == len(dashboards)
    assert len({d["title"] for d in dashboards}) == len(dashboards)


# ---------------------------------------------------------------------- panels
@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_panel_ids_unique_and_grid_does_not_overlap(path: Path) -> None:
    d = load(path)
    ids = [p["id"] for p in all_panels(d)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids {ids}"
    occupied: dict[tuple[int, int], str] = {}
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] >= 1 and g["x"] + g["w"] <= 24, (p["title"], g)
        assert g["h"] >= 1 and g["y"] >= 0
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in occupied, f"{p['title']!r} overlaps {occupied[(x, y)]!r}"
                occupied[(x, y)] = p["title"]


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_every_panel_queries_prometheus_through_the_datasource_variable(path: Path) -> None:
    d = load(path)
    panels = query_panels(d)
    assert len(panels) >= 10
    for p in panels:
        assert p["datasource"] == DS, p["title"]
        assert p["title"] and p.get("description"), f"panel {p['id']} needs title and description"
        assert p["targets"], f"{p['title']!r} has no queries"
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == DS, p["title"]
            assert t.get("expr", "").strip(), f"{p['title']!r} {t['refId']} has no expr"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_template_variables(path: Path) -> None:
    d = load(path)
    v = variables(d)
    assert {"datasource", "job", "target"} <= set(v)
    assert v["datasource"]["type"] == "datasource" and v["datasource"]["query"] == "prometheus"
    for name in ("job", "target"):
        assert v[name]["type"] == "query"
        assert v[name]["datasource"] == DS
        assert v[name]["definition"] == v[name]["query"]["query"]
    defined = set(v) | set(GRAFANA_BUILTINS)
    texts = [e for f, _t, _r, e in EXPRESSIONS if f == path.name]
    texts += [p["title"] for p in query_panels(d)]
    texts += [var["definition"] for var in v.values() if var["type"] == "query"]
    for text in texts:
        for m in VAR_REF.finditer(text):
            name = m.group(1) or m.group(2) or m.group(3)
            assert name in defined, f"undefined variable ${name} in {text!r}"
    multi = {name for name, var in v.items() if var.get("multi") or var.get("includeAll")}
    for text in texts:
        for name in multi:
            for m in re.finditer(rf'(\w+)\s*(=~|!~|!=|=)\s*"\$\{{?{name}\}}?"', text):
                assert m.group(2) in ("=~", "!~"), (
                    f"multi-value ${name} must be matched with =~ in {text!r}"
                )


def test_repeated_panels_repeat_over_multi_value_variables() -> None:
    for path in DASHBOARD_FILES:
        d = load(path)
        v = variables(d)
        for p in query_panels(d):
            if "repeat" in p:
                assert v[p["repeat"]].get("multi"), p["title"]
                assert f"${p['repeat']}" in p["title"]


def test_data_links_point_to_shipped_dashboards() -> None:
    uids = {load(p)["uid"] for p in DASHBOARD_FILES}
    linked = 0
    for path in DASHBOARD_FILES:
        for uid in re.findall(r"/d/([\w-]+)", path.read_text()):
            assert uid in uids, f"{path.name} links to unknown dashboard {uid}"
            linked += 1
    assert linked, "the overview should link to the target drill-down"


# ---------------------------------------------------------------------- the metrics contract
@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_queries_use_documented_metrics_and_the_job_variable(path: Path) -> None:
    documented = documented_metrics()
    raw = set(documented) | {"up"}
    recorded = recorded_series()
    exprs = [(f"{t} {r}", e) for f, t, r, e in EXPRESSIONS if f == path.name]
    d = load(path)
    for name, var in variables(d).items():
        # $job lists the jobs themselves, so it is the one query without a job matcher.
        if var["type"] == "query" and name != "job":
            exprs.append((f"variable {name}", var["definition"]))
    for where, expr in exprs:
        assert not bare_metric_uses(expr, raw), f"{where}: raw metric without {{job=~\"$job\"}}"
        for metric, matchers in selectors(expr):
            if metric in recorded:
                assert matchers.get("job") == ("=~", "$job"), f"{where}: {metric} without $job"
                continue
            assert metric in raw, f"{where}: {metric} is not in docs/metrics.md"
            allowed = TARGET_LABELS | (documented[metric]["labels"] if metric != "up" else set())
            assert set(matchers) <= allowed, f"{where}: {metric} has no label {set(matchers)}"
            assert matchers.get("job") == ("=~", "$job"), f'{where}: {metric} needs job=~"$job"'


def test_every_metric_of_interest_is_on_a_dashboard() -> None:
    """Each documented agent metric appears on at least one dashboard."""
    text = "\n".join(e for _f, _t, _r, e in EXPRESSIONS)
    recorded = recorded_series()
    missing = []
    for metric in documented_metrics():
        base = re.sub(r"_(bucket|sum|count)$", "", metric)
        if metric.endswith(("_sum", "_count")):
            continue
        uses = re.search(rf"\b{re.escape(metric)}\b", text) or re.search(
            rf"\b{re.escape(base)}_bucket\b", text
        )
        via_rule = base == "pacs_probe_runs_total" and any(r in text for r in recorded)
        if not (uses or via_rule):
            missing.append(metric)
    assert not missing, f"documented metrics on no dashboard: {missing}"


# ---------------------------------------------------------------------- a real Prometheus
@pytest.mark.parametrize(
    ("dashboard", "panel", "ref", "expr"),
    EXPRESSIONS,
    ids=[f"{f.removesuffix('.json')}:{t}:{r}" for f, t, r, _e in EXPRESSIONS],
)
def test_query_runs_on_prometheus_and_returns_data(
    synthetic_prometheus: PromServer,  # noqa: F811 - the imported fixture
    dashboard: str,
    panel: str,
    ref: str,
    expr: str,
) -> None:
    """Each panel query, with its variables substituted, parses and evaluates on Prometheus and
    returns series for agent-shaped data (so a misspelt metric or label shows up as no data)."""
    query = substitute(expr, {**VARIABLE_VALUES, **GRAFANA_BUILTINS})
    result = synthetic_prometheus.query(query)
    assert result, f"{dashboard} {panel!r} {ref}: no data for\n{query}"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_variable_queries_return_values(
    synthetic_prometheus: PromServer,  # noqa: F811 - the imported fixture
    path: Path,
) -> None:
    for name, var in variables(load(path)).items():
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["definition"])
        assert m, f"${name}: expected label_values(<selector>, <label>)"
        selector = substitute(m.group(1), {**VARIABLE_VALUES, **GRAFANA_BUILTINS})
        values = synthetic_prometheus.label_values(m.group(2), selector)
        assert values, f"${name}: {var['definition']} returned nothing"
