#!/usr/bin/env python3
"""Generate the Grafana dashboards in this directory (standard library only).

    python dashboards/generate.py          # rewrite pacs-overview.json and pacs-target.json
    python dashboards/generate.py --check  # exit 1 if the committed JSON differs

The committed JSON is what ships (and what the Helm chart copies); tests/test_dashboards.py fails
when it differs from this generator's output. Dashboards target current Grafana (schemaVersion
39, Grafana 10.x/11.x) and a Prometheus data source chosen with the `datasource` variable.

Job selector: the `job` variable lists every job exposing `pacs_agent_info`, whatever it is
called, and every query filters on job=~"$job". The alert rules select
job=~"pacs-health-agent.*" instead (see docs/runbooks.md, "Job selector").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCHEMA_VERSION = 39
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["pacs-health-agent", "pacs", "dicom"]
OVERVIEW_UID = "pacs-overview"
TARGET_UID = "pacs-target"
DEGRADED_LATENCY = 2  # seconds: the integration guide's degradedLatency, as in the alert rules

# Selectors shared by all queries.
J = 'job=~"$job"'
JT_MULTI = 'job=~"$job", target=~"$target"'  # overview: target is multi-value
JT = 'job=~"$job", target="$target"'  # drill-down: one target
JTP = 'job=~"$job", target="$target", probe=~"$probe"'

GREEN, ORANGE, RED, BLUE = "green", "orange", "red", "blue"
GREY = "#8e8e8e"  # UNKNOWN: no result yet, neither good nor bad


# ---------------------------------------------------------------------- building blocks
def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def value_map(*entries: tuple[int, str, str]) -> list[dict[str, Any]]:
    return [
        {
            "type": "value",
            "options": {
                str(value): {"text": text, "color": color, "index": i}
                for i, (value, text, color) in enumerate(entries)
            },
        }
    ]


# State codes in the agent's own order of severity (worst target wins).
STATE_MAP = value_map(
    (0, "HEALTHY", GREEN), (1, "UNKNOWN", GREY), (2, "DEGRADED", ORANGE), (3, "UNHEALTHY", RED)
)
STATE_THRESHOLDS = thresholds((GREEN, None), (GREY, 1), (ORANGE, 2), (RED, 3))
CHECK_MAP = value_map((0, "PASS", GREEN), (1, "WARN", ORANGE), (2, "FAIL", RED))
SUCCESS_MAP = value_map((0, "FAILED", RED), (1, "OK", GREEN))
ENDPOINT_MAP = value_map((0, "primary", GREEN), (1, "secondary", ORANGE))
UP_MAP = value_map((0, "DOWN", RED), (1, "UP", GREEN))
ACCEPTED_MAP = value_map((0, "REFUSED", RED), (1, "accepted", GREEN))
RELOAD_MAP = value_map((0, "FAILED", RED), (1, "OK", GREEN))
MAINTENANCE_MAP = value_map((0, "no window", GREEN), (1, "MAINTENANCE", BLUE))
CODE_THRESHOLDS = thresholds((GREEN, None), (ORANGE, 1), (RED, 2))


def state_code(selector: str, by: str, metric: str = "pacs_target_health") -> str:
    """0 HEALTHY, 1 UNKNOWN, 2 DEGRADED, 3 UNHEALTHY from a state enum: the worst state that is 1
    (agents without the UNKNOWN series read 0 there, as before)."""
    return (
        f"max by ({by}) (\n"
        f'  {metric}{{{selector}, state="UNHEALTHY"}} * 3\n'
        f'  or {metric}{{{selector}, state="DEGRADED"}} * 2\n'
        f'  or {metric}{{{selector}, state="UNKNOWN"}}\n'
        f'  or {metric}{{{selector}, state="HEALTHY"}} * 0\n'
        ")"
    )


def check_code(selector: str, by: str) -> str:
    """0 PASS, 1 WARN, 2 FAIL from the pacs_check_status enum."""
    return (
        f'max by ({by}) (pacs_check_status{{{selector}, status="FAIL"}}) * 2\n'
        f"+ on ({by})\n"
        f'max by ({by}) (pacs_check_status{{{selector}, status="WARN"}})'
    )


def availability(selector: str, by: str, window: str) -> str:
    return (
        f"min by ({by}) (target_probe:pacs_probe_availability:ratio_rate{window}{{{selector}}})"
    )


def burn_rate(selector: str, window: str) -> str:
    """Error ratio over `window` / (1 - objective): 1 spends the 30-day budget in 30 days."""
    return (
        f"target_probe_slo:pacs_slo_errors:ratio_rate{window}{{{selector}}}\n"
        f"/ on (job, target, probe, slo)\n"
        f"(1 - target_probe_slo:pacs_slo_objective:ratio{{{selector}}})"
    )


def budget_remaining(selector: str) -> str:
    return f"target_probe_slo:pacs_slo_error_budget_remaining:ratio30d{{{selector}}}"


def target(
    expr: str,
    legend: str = "__auto",
    *,
    instant: bool = False,
    fmt: str = "time_series",
    ref: str = "A",
) -> dict[str, Any]:
    t: dict[str, Any] = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "refId": ref,
    }
    if fmt != "time_series":
        t["format"] = fmt
    return t


def targets(*items: dict[str, Any]) -> list[dict[str, Any]]:
    """Number refIds A, B, C... in order."""
    return [{**item, "refId": chr(ord("A") + i)} for i, item in enumerate(items)]


def field_defaults(
    unit: str = "short",
    *,
    mappings: list[dict[str, Any]] | None = None,
    steps: dict[str, Any] | None = None,
    color: str = "palette-classic",
    minimum: float | None = None,
    maximum: float | None = None,
    decimals: int | None = None,
    custom: dict[str, Any] | None = None,
    no_value: str | None = None,
    links: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": color},
        "mappings": mappings or [],
        "thresholds": steps or thresholds((GREEN, None)),
    }
    if minimum is not None:
        d["min"] = minimum
    if maximum is not None:
        d["max"] = maximum
    if decimals is not None:
        d["decimals"] = decimals
    if custom is not None:
        d["custom"] = custom
    if no_value is not None:
        d["noValue"] = no_value
    if links is not None:
        d["links"] = links
    return d


def panel(kind: str, title: str, description: str, tgts: list[dict[str, Any]],
          defaults: dict[str, Any], options: dict[str, Any], **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": tgts,
        "fieldConfig": {"defaults": defaults, "overrides": extra.pop("overrides", [])},
        "options": options,
    }
    p.update(extra)
    return p


LEGEND_TABLE = {
    "showLegend": True,
    "displayMode": "table",
    "placement": "right",
    "calcs": ["lastNotNull", "max"],
}
LEGEND_LIST = {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []}


def timeseries(title: str, description: str, tgts: list[dict[str, Any]], unit: str = "short", *,
               stack: bool = False, bars: bool = False, threshold: float | None = None,
               legend: dict[str, Any] | None = None, minimum: float | None = 0,
               maximum: float | None = None, decimals: int | None = None,
               **extra: Any) -> dict[str, Any]:
    custom = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if (stack or bars) else 10,
        "gradientMode": "none",
        "showPoints": "never",
        "spanNulls": False,
        "axisPlacement": "auto",
        "axisSoftMin": 0,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "line+area" if threshold is not None else "off"},
    }
    steps = (
        thresholds(("transparent", None), (RED, threshold))
        if threshold is not None
        else thresholds((GREEN, None))
    )
    defaults = field_defaults(unit, steps=steps, minimum=minimum, maximum=maximum,
                              decimals=decimals, custom=custom)
    options = {
        "legend": legend or LEGEND_TABLE,
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, tgts, defaults, options, **extra)


def stat(title: str, description: str, tgts: list[dict[str, Any]], unit: str = "short", *,
         mappings: list[dict[str, Any]] | None = None, steps: dict[str, Any] | None = None,
         decimals: int | None = None, text_mode: str = "value_and_name",
         no_value: str | None = None, links: list[dict[str, Any]] | None = None,
         **extra: Any) -> dict[str, Any]:
    defaults = field_defaults(unit, mappings=mappings, steps=steps, color="thresholds",
                              decimals=decimals, no_value=no_value, links=links)
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background",
        "graphMode": "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": text_mode,
        "wideLayout": True,
        "showPercentChange": False,
    }
    return panel("stat", title, description, tgts, defaults, options, **extra)


def state_timeline(title: str, description: str, tgts: list[dict[str, Any]],
                   mappings: list[dict[str, Any]], *, kind: str = "state-timeline",
                   **extra: Any) -> dict[str, Any]:
    defaults = field_defaults(
        mappings=mappings,
        steps=CODE_THRESHOLDS,
        color="thresholds",
        custom={"fillOpacity": 80, "lineWidth": 0, "hideFrom": {"legend": False,
                                                                "tooltip": False, "viz": False}},
    )
    options: dict[str, Any] = {
        "showValue": "never",
        "rowHeight": 0.9,
        "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    if kind == "state-timeline":
        options.update({"mergeValues": True, "alignValue": "left"})
    else:
        options["colWidth"] = 0.9
    return panel(kind, title, description, tgts, defaults, options, **extra)


def bargauge(title: str, description: str, tgts: list[dict[str, Any]], unit: str, *,
             steps: dict[str, Any], minimum: float | None = 0, maximum: float | None = None,
             decimals: int | None = None, **extra: Any) -> dict[str, Any]:
    defaults = field_defaults(unit, steps=steps, color="thresholds", minimum=minimum,
                              maximum=maximum, decimals=decimals)
    options = {
        "orientation": "horizontal",
        "displayMode": "basic",
        "valueMode": "color",
        "namePlacement": "left",
        "showUnfilled": True,
        "sizing": "auto",
        "minVizHeight": 16,
        "minVizWidth": 8,
        "maxVizHeight": 300,
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    }
    return panel("bargauge", title, description, tgts, defaults, options, **extra)


def table(title: str, description: str, tgts: list[dict[str, Any]], *, unit: str = "short",
          transformations: list[dict[str, Any]], overrides: list[dict[str, Any]] | None = None,
          steps: dict[str, Any] | None = None, decimals: int | None = None,
          mappings: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    defaults = field_defaults(
        unit, steps=steps, color="thresholds", decimals=decimals, mappings=mappings,
        custom={"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
    )
    options = {
        "showHeader": True,
        "cellHeight": "sm",
        "footer": {"show": False, "reducer": ["sum"], "countRows": False, "fields": ""},
    }
    return panel("table", title, description, tgts, defaults, options,
                 transformations=transformations, overrides=overrides or [], **extra)


def heatmap(title: str, description: str, tgts: list[dict[str, Any]], **extra: Any
            ) -> dict[str, Any]:
    defaults = field_defaults(custom={"hideFrom": {"legend": False, "tooltip": False,
                                                   "viz": False},
                                      "scaleDistribution": {"type": "linear"}})
    options = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "fill": "dark-orange",
                  "scale": "exponential", "exponent": 0.5, "steps": 64, "reverse": False},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
        "yAxis": {"axisPlacement": "left", "unit": "s", "reverse": False},
        "showValue": "never",
    }
    return panel("heatmap", title, description, tgts, defaults, options, **extra)


def color_override(column: str, unit: str, steps: dict[str, Any],
                   decimals: int | None = None) -> dict[str, Any]:
    props: list[dict[str, Any]] = [
        {"id": "unit", "value": unit},
        {"id": "thresholds", "value": steps},
        {"id": "custom.cellOptions", "value": {"type": "color-text"}},
    ]
    if decimals is not None:
        props.append({"id": "decimals", "value": decimals})
    return {"matcher": {"id": "byName", "options": column}, "properties": props}


def organize(rename: dict[str, str], exclude: tuple[str, ...] = ("Time",)) -> dict[str, Any]:
    return {
        "id": "organize",
        "options": {
            "excludeByName": {name: True for name in exclude},
            "indexByName": {},
            "renameByName": rename,
        },
    }


MERGE = {"id": "merge", "options": {}}


class Layout:
    """Places panels left to right on Grafana's 24-column grid and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def _next_id(self) -> int:
        return len(self.panels) + 1

    def newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self.newline()
        self.panels.append({
            "type": "row",
            "title": title,
            "id": self._next_id(),
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
            "panels": [],
        })
        self.y += 1

    def add(self, p: dict[str, Any], w: int, h: int) -> None:
        if self.x + w > 24:
            self.newline()
        p = {"id": self._next_id(), "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y}, **p}
        self.panels.append(p)
        self.x += w
        self.row_height = max(self.row_height, h)


def datasource_var() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
        "skipUrlSync": False,
    }


def query_var(name: str, label: str, query: str, *, multi: bool,
              all_value: str | None = None) -> dict[str, Any]:
    v: dict[str, Any] = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {
            "qryType": 1,
            "query": query,
            "refId": "PrometheusVariableQueryEditor-VariableQuery",
        },
        "current": {},
        "hide": 0,
        "includeAll": multi,
        "multi": multi,
        "options": [],
        "refresh": 2,
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
    }
    if all_value is not None:
        v["allValue"] = all_value
    return v


JOB_VAR = query_var("job", "Job", "label_values(pacs_agent_info, job)", multi=True)


def dashboard(uid: str, title: str, description: str, layout: Layout,
              variables: list[dict[str, Any]], links: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": links,
        "panels": layout.panels,
        "refresh": "1m",
        "schemaVersion": SCHEMA_VERSION,
        "tags": TAGS,
        "templating": {"list": variables},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": title,
        "uid": uid,
        "version": 1,
        "weekStart": "",
    }


DASHBOARD_LINKS = [
    {
        "title": "PACS dashboards",
        "type": "dashboards",
        "tags": ["pacs-health-agent"],
        "asDropdown": True,
        "includeVars": True,
        "keepTime": True,
        "icon": "external link",
        "targetBlank": False,
        "tooltip": "",
        "url": "",
    },
    {
        "title": "Runbooks",
        "type": "link",
        "url": "docs/runbooks.md",
        "icon": "doc",
        "asDropdown": False,
        "includeVars": False,
        "keepTime": False,
        "targetBlank": True,
        "tags": [],
        "tooltip": "What each alert means and what to do",
    },
]

DRILLDOWN_LINK = [
    {
        "title": "Open ${__field.labels.target}",
        "url": f"/d/{TARGET_UID}/{TARGET_UID}?${{datasource:queryparam}}&${{job:queryparam}}"
               "&var-target=${__field.labels.target}&${__url_time_range}",
        "targetBlank": False,
    }
]

DAY = 86400
EXPIRY_STEPS = thresholds((RED, None), (ORANGE, 3 * DAY), (GREEN, 14 * DAY))
AVAILABILITY_STEPS = thresholds((RED, None), (ORANGE, 0.95), (GREEN, 0.99))
# Budget left: red when spent, orange in its last quarter. Burn rates: the alert factors.
BUDGET_STEPS = thresholds((RED, None), (ORANGE, 0), (GREEN, 0.25))
BURN_STEPS = thresholds((GREEN, None), (ORANGE, 1), (RED, 6))


# ---------------------------------------------------------------------- PACS / Overview
def overview() -> dict[str, Any]:
    lay = Layout()
    lay.row("Targets")
    lay.add(stat(
        "Target state",
        "Each target's current state as the agent evaluates it (pacs_target_health). "
        "Click a target to drill down.",
        targets(target(state_code(JT_MULTI, "target"), "{{target}}", instant=True)),
        mappings=STATE_MAP, steps=STATE_THRESHOLDS, text_mode="value_and_name",
        no_value="no targets", links=DRILLDOWN_LINK,
    ), 16, 6)
    lay.add(stat(
        "Agent state",
        "Worst target state per agent (pacs_agent_health).",
        targets(target(state_code(J, "", "pacs_agent_health"), "agent", instant=True)),
        mappings=STATE_MAP, steps=STATE_THRESHOLDS, text_mode="value",
    ), 4, 6)
    lay.add(stat(
        "Targets probed",
        "Targets the selected agents (all shards) probe (pacs_agent_targets).",
        targets(target(f"sum(pacs_agent_targets{{{J}}})", "targets", instant=True)),
        steps=thresholds((RED, None), (BLUE, 1)), text_mode="value",
    ), 4, 6)
    lay.add(state_timeline(
        "Check status by target and probe",
        "PASS / WARN / FAIL of every check over time (pacs_check_status). A check FAILs after "
        "failureThreshold consecutive failures and recovers after successThreshold successes.",
        targets(target(check_code(JT_MULTI, "target, probe"), "{{target}} / {{probe}}")),
        CHECK_MAP, kind="status-history",
    ), 24, 9)
    lay.add(state_timeline(
        "Target state over time",
        "pacs_target_health over time.",
        targets(target(state_code(JT_MULTI, "target"), "{{target}}")),
        STATE_MAP,
    ), 24, 6)

    lay.row("Availability")
    lay.add(table(
        "Availability by target and probe",
        "Successful runs / all runs over 5 minutes, 1 hour and 30 days (recording rules "
        "target_probe:pacs_probe_availability:ratio_rate*).",
        targets(
            target(availability(JT_MULTI, "target, probe", "5m"), instant=True, fmt="table"),
            target(availability(JT_MULTI, "target, probe", "1h"), instant=True, fmt="table"),
            target(availability(JT_MULTI, "target, probe", "30d"), instant=True, fmt="table"),
        ),
        transformations=[MERGE, organize({"Value #A": "5m", "Value #B": "1h",
                                          "Value #C": "30d"})],
        overrides=[color_override(c, "percentunit", AVAILABILITY_STEPS, 3)
                   for c in ("5m", "1h", "30d")],
    ), 12, 9)
    lay.add(timeseries(
        "Availability (5m)",
        "target_probe:pacs_probe_availability:ratio_rate5m per target and probe.",
        targets(target(availability(JT_MULTI, "target, probe", "5m"), "{{target}} / {{probe}}")),
        "percentunit", minimum=None, maximum=1, decimals=2,
    ), 12, 9)

    lay.row("Error budget")
    lay.add(table(
        "Error budget by target, probe and SLO",
        "Per service-level objective (slo: availability or latency, docs/slo.md): the objective, "
        "the share of the 30-day error budget left (1 = untouched, 0 = spent, negative = "
        "objective missed) and the burn rate over 1 hour, 6 hours and 3 days (1 spends the "
        "budget in exactly 30 days; the burn-rate alerts fire above 14.4, 6 and 1).",
        targets(
            target(f"max by (target, probe, slo) (pacs_slo_objective_ratio{{{JT_MULTI}}})",
                   instant=True, fmt="table"),
            target(f"min by (target, probe, slo) ({budget_remaining(JT_MULTI)})",
                   instant=True, fmt="table"),
            *(target(f"max by (target, probe, slo) (\n{burn_rate(JT_MULTI, w)}\n)",
                     instant=True, fmt="table") for w in ("1h", "6h", "3d")),
        ),
        transformations=[MERGE, organize({
            "Value #A": "objective", "Value #B": "budget left (30d)", "Value #C": "burn 1h",
            "Value #D": "burn 6h", "Value #E": "burn 3d",
        })],
        overrides=[
            color_override("objective", "percentunit", thresholds((BLUE, None)), 2),
            color_override("budget left (30d)", "percentunit", BUDGET_STEPS, 1),
            *(color_override(c, "short", BURN_STEPS, 1)
              for c in ("burn 1h", "burn 6h", "burn 3d")),
        ],
    ), 12, 9)
    lay.add(timeseries(
        "Burn rate (1h)",
        "Error budget burn rate over the last hour per target, probe and SLO: error ratio / "
        "(1 - objective). Above 14.4 (red) for an hour and 5 minutes, PacsErrorBudgetBurnFast "
        "pages.",
        targets(target(burn_rate(JT_MULTI, "1h"), "{{target}} / {{probe}} / {{slo}}")),
        "short", threshold=14.4, decimals=1,
    ), 6, 9)
    lay.add(timeseries(
        "Error budget remaining (30d)",
        "Share of each 30-day error budget left over time "
        "(target_probe_slo:pacs_slo_error_budget_remaining:ratio30d).",
        targets(target(budget_remaining(JT_MULTI), "{{target}} / {{probe}} / {{slo}}")),
        "percentunit", minimum=None, maximum=1, decimals=1,
    ), 6, 9)

    lay.row("Latency")
    lay.add(timeseries(
        "p95 latency by target and probe (HDR)",
        "The agent's windowed HDR-histogram p95 of successful runs "
        "(pacs_probe_latency_seconds{quantile=\"0.95\"}); the red area is above the guide's "
        "degradedLatency (2 s), where PacsLatencyP95High fires after 10 minutes.",
        targets(target(
            f'max by (target, probe) (pacs_probe_latency_seconds{{{JT_MULTI}, quantile="0.95"}})',
            "{{target}} / {{probe}}")),
        "s", threshold=DEGRADED_LATENCY,
    ), 12, 9)
    lay.add(bargauge(
        "Current p95 by target (worst probe)",
        "Highest HDR p95 over the target's probes.",
        targets(target(
            f'max by (target) (pacs_probe_latency_seconds{{{JT_MULTI}, quantile="0.95"}})',
            "{{target}}", instant=True)),
        "s", steps=thresholds((GREEN, None), (ORANGE, DEGRADED_LATENCY / 2),
                              (RED, DEGRADED_LATENCY)),
    ), 6, 9)
    lay.add(timeseries(
        "p95 by probe, all selected targets (histogram)",
        "Aggregated across targets from the fixed-bucket histogram pacs_probe_duration_seconds "
        "(as precise as its buckets; the HDR panel is exact to 1 %).",
        targets(target(
            "histogram_quantile(0.95, sum by (probe, le) (rate(pacs_probe_duration_seconds_bucket"
            f"{{{JT_MULTI}}}[$__rate_interval])))", "{{probe}}")),
        "s", threshold=DEGRADED_LATENCY, legend=LEGEND_LIST,
    ), 6, 9)
    lay.add(timeseries(
        "Retrieve time to first image",
        "How long a radiologist waits for the first image: seconds from the C-GET/C-MOVE "
        "request to the last byte of the canary study's first instance, and to its last "
        "instance (pacs_probe_phase_duration_seconds, probe dicom_retrieve, phases first_image "
        "and last_image). Only targets with a dicom_retrieve block.",
        targets(
            target(f'max by (target) (pacs_probe_phase_duration_seconds{{{JT_MULTI}, '
                   'probe="dicom_retrieve", phase="first_image"})', "{{target}} first image"),
            target(f'max by (target) (pacs_probe_phase_duration_seconds{{{JT_MULTI}, '
                   'probe="dicom_retrieve", phase="last_image"})', "{{target}} last image"),
        ),
        "s", threshold=DEGRADED_LATENCY,
    ), 24, 8)

    lay.row("Failures")
    lay.add(timeseries(
        "Failures by reason",
        "Failed runs per minute by bounded reason (pacs_probe_failures_total); see the failure "
        "reasons in docs/metrics.md.",
        targets(target(
            f"sum by (target, reason) (rate(pacs_probe_failures_total{{{JT_MULTI}}}"
            "[$__rate_interval])) * 60", "{{target}}: {{reason}}")),
        "short", bars=True, stack=True,
    ), 14, 9)
    lay.add(table(
        "Failures in the time range",
        "Failed runs per target, probe and reason over the dashboard's time range.",
        targets(target(
            f"sum by (target, probe, reason) (increase(pacs_probe_failures_total{{{JT_MULTI}}}"
            "[$__range])) > 0", instant=True, fmt="table")),
        transformations=[organize({"Value": "failures"})], decimals=0,
    ), 10, 9)

    lay.row("Failover and certificates")
    lay.add(state_timeline(
        "Serving endpoint (primary/secondary pairs)",
        "Which endpoint of each pair serves (pacs_failover_active). PacsRunningOnSecondary "
        "fires after 5 minutes on the secondary.",
        targets(target(
            f'max by (target) (pacs_failover_active{{{JT_MULTI}, endpoint!="primary"}})',
            "{{target}}")),
        ENDPOINT_MAP,
    ), 12, 8)
    lay.add(bargauge(
        "Certificate expiry",
        "Time until the earliest-expiring certificate each probe saw expires "
        "(probe_ssl_earliest_cert_expiry). Orange below 14 days (ticket), red below 3 days "
        "(page).",
        targets(target(
            f"min by (target, probe) (probe_ssl_earliest_cert_expiry{{{JT_MULTI}}} > 0) - time()",
            "{{target}} / {{probe}}", instant=True)),
        "s", steps=EXPIRY_STEPS, minimum=None,
    ), 12, 8)

    lay.row("Agent self health")
    lay.add(stat(
        "Agents up",
        "Prometheus's scrape of each agent (up). PacsAgentDown fires after 5 minutes down.",
        targets(target(f"up{{{J}}}", "{{instance}}", instant=True)),
        mappings=UP_MAP, steps=thresholds((RED, None), (GREEN, 1)),
    ), 6, 6)
    lay.add(timeseries(
        "Self-probe overhead",
        "Duration the agent reports for a C-ECHO to its own loopback SCP: its own timing "
        "overhead (pacs_agent_self_probe_overhead_seconds). Above 50 ms the PACS latencies it "
        "reports are inflated.",
        targets(target(f"pacs_agent_self_probe_overhead_seconds{{{J}}}", "{{instance}}")),
        "s", threshold=0.05, legend=LEGEND_LIST,
    ), 9, 6)
    lay.add(timeseries(
        "Scheduler start lateness",
        "Actual minus scheduled start of runs (pacs_scheduler_start_lateness_seconds): "
        "p50 / p99 per agent.",
        targets(
            target("histogram_quantile(0.5, sum by (instance, le) (rate("
                   f"pacs_scheduler_start_lateness_seconds_bucket{{{J}}}[$__rate_interval])))",
                   "{{instance}} p50"),
            target("histogram_quantile(0.99, sum by (instance, le) (rate("
                   f"pacs_scheduler_start_lateness_seconds_bucket{{{J}}}[$__rate_interval])))",
                   "{{instance}} p99"),
        ),
        "s", legend=LEGEND_LIST,
    ), 9, 6)
    lay.add(timeseries(
        "Missed runs",
        "Scheduled runs missed or skipped (pool busy, previous run still going) per target "
        "and probe (pacs_scheduler_missed_runs_total).",
        targets(target(
            f"sum by (target, probe) (increase(pacs_scheduler_missed_runs_total{{{JT_MULTI}}}"
            "[$__rate_interval]))", "{{target}} / {{probe}}")),
        "short", bars=True, stack=True, legend=LEGEND_LIST,
    ), 8, 7)
    lay.add(timeseries(
        "OTLP export failures",
        "Failed OTLP exports per agent (pacs_otlp_export_failures_total).",
        targets(target(
            f"sum by (instance) (increase(pacs_otlp_export_failures_total{{{J}}}"
            "[$__rate_interval]))", "{{instance}}")),
        "short", bars=True, legend=LEGEND_LIST,
    ), 8, 7)
    lay.add(timeseries(
        "Latencies outside the HDR range",
        "Latencies clamped into the HDR histogram's range (pacs_latency_out_of_range_total): "
        "quantiles of these probes are unreliable while this is not zero.",
        targets(target(
            f"sum by (target, probe) (increase(pacs_latency_out_of_range_total{{{JT_MULTI}}}"
            "[$__rate_interval]))", "{{target}} / {{probe}}")),
        "short", bars=True, legend=LEGEND_LIST,
    ), 8, 7)
    lay.add(table(
        "Agents",
        "Version and shard of each agent, targets probed, configuration load status and age.",
        targets(
            target(f"max by (instance, version, shard) (pacs_agent_info{{{J}}})",
                   instant=True, fmt="table"),
            target(f"max by (instance) (pacs_agent_targets{{{J}}})", instant=True, fmt="table"),
            target(f"max by (instance) (pacs_config_last_reload_successful{{{J}}})",
                   instant=True, fmt="table"),
            target(f"time() - max by (instance) "
                   f"(pacs_config_last_reload_success_timestamp_seconds{{{J}}})",
                   instant=True, fmt="table"),
        ),
        transformations=[MERGE, organize(
            {"Value #B": "targets", "Value #C": "config loaded", "Value #D": "config age"},
            exclude=("Time", "Value #A"),
        )],
        overrides=[
            {"matcher": {"id": "byName", "options": "config loaded"},
             "properties": [{"id": "mappings", "value": RELOAD_MAP},
                            {"id": "custom.cellOptions", "value": {"type": "color-text"}}]},
            {"matcher": {"id": "byName", "options": "config age"},
             "properties": [{"id": "unit", "value": "s"}]},
        ],
    ), 24, 6)

    variables = [
        datasource_var(),
        JOB_VAR,
        query_var("target", "Target", f'label_values(pacs_target_health{{{J}}}, target)',
                  multi=True, all_value=".*"),
    ]
    return dashboard(
        OVERVIEW_UID, "PACS / Overview",
        "Every PACS target's state, availability, latency, failures, failover and certificates, "
        "and the health of the pacs-health-agent itself.",
        lay, variables, DASHBOARD_LINKS,
    )


# ---------------------------------------------------------------------- PACS / Target
def target_drilldown() -> dict[str, Any]:
    lay = Layout()
    lay.row("State")
    lay.add(stat(
        "Target state",
        "The target's current state (pacs_target_health).",
        targets(target(state_code(JT, "target"), "{{target}}", instant=True)),
        mappings=STATE_MAP, steps=STATE_THRESHOLDS, text_mode="value", no_value="no data",
    ), 5, 5)
    lay.add(stat(
        "Checks",
        "Each check's current status (pacs_check_status).",
        targets(target(check_code(JT, "probe"), "{{probe}}", instant=True)),
        mappings=CHECK_MAP, steps=CODE_THRESHOLDS,
    ), 13, 5)
    lay.add(bargauge(
        "State entries in the time range",
        "How often the target entered each state over the dashboard's time range "
        "(changes() - resets() of the 0/1 state series counts its 0 -> 1 steps).",
        targets(target(
            f"sum by (state) (changes(pacs_target_health{{{JT}}}[$__range])"
            f" - resets(pacs_target_health{{{JT}}}[$__range]))", "{{state}}", instant=True)),
        "short", steps=thresholds((BLUE, None)), decimals=0,
    ), 6, 5)
    lay.add(state_timeline(
        "Target state over time",
        "pacs_target_health over time.",
        targets(target(state_code(JT, "target"), "{{target}}")),
        STATE_MAP,
    ), 24, 4)
    lay.add(state_timeline(
        "Check status over time",
        "PASS / WARN / FAIL per check (pacs_check_status).",
        targets(target(check_code(JT, "probe"), "{{probe}}")),
        CHECK_MAP,
    ), 12, 7)
    lay.add(state_timeline(
        "Last run result",
        "probe_success of every run, blackbox_exporter style: the raw signal before the agent's "
        "hysteresis.",
        targets(target(f"max by (probe) (probe_success{{{JTP}}})", "{{probe}}")),
        SUCCESS_MAP,
    ), 12, 7)
    lay.add(timeseries(
        "State transitions",
        "State series that changed per interval (each transition flips one series to 1 and "
        "another to 0).",
        targets(target(
            f"sum by (state) (changes(pacs_target_health{{{JT}}}[$__rate_interval]))",
            "{{state}}")),
        "short", bars=True, legend=LEGEND_LIST,
    ), 24, 5)

    lay.row("Latency")
    lay.add(timeseries(
        "Phase breakdown: $probe",
        "Duration of each phase of the last run (pacs_probe_phase_duration_seconds), stacked: "
        "the stack's height is the run's wire time. connect = TCP, associate = "
        "A-ASSOCIATE-RQ -> AC, dimse / first_match = the DIMSE exchange, release = "
        "A-RELEASE; dns / tls / first_byte / transfer for HTTP probes.",
        targets(target(
            f"max by (phase) (pacs_probe_phase_duration_seconds{{{JTP}}})", "{{phase}}")),
        "s", stack=True, legend=LEGEND_LIST,
        repeat="probe", repeatDirection="h", maxPerRow=3,
    ), 24, 8)
    lay.add(timeseries(
        "HDR quantiles",
        "p50 / p95 / p99 of successful runs over the agent's sliding window "
        "(pacs_probe_latency_seconds), and the target's own degradedLatency "
        "(pacs_target_degraded_latency_seconds) that PacsLatencyP95High compares the p95 with. "
        "Red: above the default degradedLatency (2 s).",
        targets(
            target(f"max by (probe, quantile) (pacs_probe_latency_seconds{{{JTP}}})",
                   "{{probe}} p{{quantile}}"),
            target(f"max(pacs_target_degraded_latency_seconds{{{JT}}})", "degradedLatency"),
        ),
        "s", threshold=DEGRADED_LATENCY,
    ), 12, 8)
    lay.add(timeseries(
        "Last run vs. histogram p95",
        "Wall time of the last run (probe_duration_seconds) and the p95 from the fixed-bucket "
        "histogram (pacs_probe_duration_seconds).",
        targets(
            target(f"max by (probe) (probe_duration_seconds{{{JTP}}})", "{{probe}} last run"),
            target("histogram_quantile(0.95, sum by (probe, le) (rate("
                   f"pacs_probe_duration_seconds_bucket{{{JTP}}}[$__rate_interval])))",
                   "{{probe}} p95 (buckets)"),
        ),
        "s", threshold=DEGRADED_LATENCY,
    ), 12, 8)
    lay.add(timeseries(
        "Time since last run",
        "Seconds since each probe last started (pacs_probe_last_run_timestamp_seconds); it "
        "should stay below the probe interval. A rising line is a probe that stopped running.",
        targets(target(
            f"time() - max by (probe) (pacs_probe_last_run_timestamp_seconds{{{JTP}}})",
            "{{probe}}")),
        "s",
    ), 12, 6)
    lay.add(timeseries(
        "Slow runs (latency SLO)",
        "Successful runs over the latency SLO's threshold per interval "
        "(pacs_probe_slow_runs_total), for probes with a latency objective (docs/slo.md): each "
        "spends latency error budget.",
        targets(target(
            f"sum by (probe) (increase(pacs_probe_slow_runs_total{{{JTP}}}[$__rate_interval]))",
            "{{probe}}")),
        "short", bars=True, legend=LEGEND_LIST,
    ), 12, 6)
    lay.add(heatmap(
        "Run duration distribution",
        "Successful runs per duration bucket (pacs_probe_duration_seconds_bucket).",
        targets(target(
            f"sum by (le) (increase(pacs_probe_duration_seconds_bucket{{{JTP}}}"
            "[$__rate_interval]))", "{{le}}", fmt="heatmap")),
    ), 24, 8)

    lay.row("Runs and failures")
    lay.add(timeseries(
        "Failures by reason",
        "Failed runs per interval by probe and bounded reason (pacs_probe_failures_total).",
        targets(target(
            f"sum by (probe, reason) (increase(pacs_probe_failures_total{{{JTP}}}"
            "[$__rate_interval]))", "{{probe}}: {{reason}}")),
        "short", bars=True, stack=True,
    ), 12, 8)
    lay.add(table(
        "Failures in the time range",
        "Failed runs by probe and reason over the dashboard's time range.",
        targets(target(
            f"sum by (probe, reason) (increase(pacs_probe_failures_total{{{JTP}}}[$__range]))"
            " > 0", instant=True, fmt="table")),
        transformations=[organize({"Value": "failures"})], decimals=0,
    ), 12, 8)
    lay.add(table(
        "Availability",
        "Successful runs / all runs (recording rules target_probe:pacs_probe_availability:*).",
        targets(
            target(availability(JTP, "probe", "5m"), instant=True, fmt="table"),
            target(availability(JTP, "probe", "1h"), instant=True, fmt="table"),
            target(availability(JTP, "probe", "30d"), instant=True, fmt="table"),
        ),
        transformations=[MERGE, organize({"Value #A": "5m", "Value #B": "1h",
                                          "Value #C": "30d"})],
        overrides=[color_override(c, "percentunit", AVAILABILITY_STEPS, 3)
                   for c in ("5m", "1h", "30d")],
    ), 12, 7)
    lay.add(timeseries(
        "Attempts per run",
        "pacs_probe_attempts_total / pacs_probe_runs_total: above 1 when retryPolicy retries.",
        targets(target(
            f"sum by (probe) (rate(pacs_probe_attempts_total{{{JTP}}}[$__rate_interval]))\n"
            f"/\nsum by (probe) (rate(pacs_probe_runs_total{{{JTP}}}[$__rate_interval]))",
            "{{probe}}")),
        "short", minimum=None, legend=LEGEND_LIST,
    ), 12, 7)

    lay.row("Failover, certificates and scheduling")
    lay.add(state_timeline(
        "Serving endpoint",
        "Primary or secondary serving (pacs_failover_active); only for targets with a pair.",
        targets(target(
            f'max(pacs_failover_active{{{JT}, endpoint!="primary"}})', "serving")),
        ENDPOINT_MAP,
    ), 8, 6)
    lay.add(bargauge(
        "Certificate expiry",
        "Time until expiry of the earliest certificate in the chain "
        "(probe_ssl_earliest_cert_expiry) and of the leaf "
        "(pacs_tls_cert_not_after_timestamp_seconds), and the target's warning period "
        "(certExpiryWarningDays, pacs_target_cert_expiry_warning_seconds).",
        targets(
            target(f"min by (probe) (probe_ssl_earliest_cert_expiry{{{JTP}}} > 0) - time()",
                   "{{probe}} chain", instant=True),
            target(f"min by (probe) (pacs_tls_cert_not_after_timestamp_seconds{{{JTP}}} > 0)"
                   " - time()", "{{probe}} leaf", instant=True),
            target(f"max(pacs_target_cert_expiry_warning_seconds{{{JT}}})", "warning period",
                   instant=True),
        ),
        "s", steps=EXPIRY_STEPS, minimum=None,
    ), 8, 6)
    lay.add(timeseries(
        "Missed runs",
        "Scheduled runs missed or skipped for this target (pacs_scheduler_missed_runs_total).",
        targets(target(
            f"sum by (probe) (increase(pacs_scheduler_missed_runs_total{{{JTP}}}"
            "[$__rate_interval]))", "{{probe}}")),
        "short", bars=True, legend=LEGEND_LIST,
    ), 8, 6)
    lay.add(state_timeline(
        "Failover endpoints",
        "Whether each endpoint (primary, secondary) answered in the last failover run "
        "(pacs_failover_endpoint_up): a dead standby shows DOWN here while the primary serves.",
        targets(target(f"max by (endpoint) (pacs_failover_endpoint_up{{{JT}}})",
                       "{{endpoint}}")),
        UP_MAP,
    ), 24, 4)
    lay.add(state_timeline(
        "Maintenance window",
        "1 while the target is inside one of its configured maintenance windows "
        "(pacs_target_maintenance): probes run, the shipped alerts stay quiet.",
        targets(target(f"max(pacs_target_maintenance{{{JT}}})", "maintenance")),
        MAINTENANCE_MAP,
    ), 16, 3)
    lay.add(stat(
        "TLS version",
        "TLS version the last handshake of each TLS probe negotiated (probe_tls_version_info).",
        targets(target(f"max by (probe, version) (probe_tls_version_info{{{JTP}}})",
                       "{{probe}}: {{version}}", instant=True)),
        steps=thresholds((BLUE, None)), text_mode="name", no_value="no TLS",
    ), 8, 3)

    lay.row("DICOM capabilities")
    lay.add(table(
        "Presentation contexts",
        "Each (SOP class, transfer syntax) pair the dicom_capabilities check proposes and "
        "whether the PACS accepted it in the last run (pacs_dicom_context_accepted); a refused "
        "pair while others are accepted raises PacsDicomCapabilityLost. Only targets with a "
        "dicom_capabilities block.",
        targets(target(
            f"max by (sop_class, transfer_syntax) (pacs_dicom_context_accepted{{{JT}}})",
            instant=True, fmt="table")),
        transformations=[organize({"sop_class": "SOP class",
                                   "transfer_syntax": "transfer syntax",
                                   "Value": "accepted"})],
        overrides=[
            {"matcher": {"id": "byName", "options": "accepted"},
             "properties": [{"id": "mappings", "value": ACCEPTED_MAP},
                            {"id": "custom.cellOptions", "value": {"type": "color-text"}}]},
        ],
    ), 24, 8)

    variables = [
        datasource_var(),
        JOB_VAR,
        query_var("target", "Target", f'label_values(pacs_target_health{{{J}}}, target)',
                  multi=False),
        query_var("probe", "Probe",
                  f'label_values(pacs_probe_runs_total{{{J}, target="$target"}}, probe)',
                  multi=True, all_value=".*"),
    ]
    return dashboard(
        TARGET_UID, "PACS / Target",
        "One PACS target in detail: state history, per-phase latency, HDR quantiles, failure "
        "reasons, availability, failover, certificates.",
        lay, variables, DASHBOARD_LINKS,
    )


DASHBOARDS = {
    "pacs-overview.json": overview,
    "pacs-target.json": target_drilldown,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a committed dashboard differs from the generated one")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = HERE / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run python {Path(__file__).name}): {', '.join(stale)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
