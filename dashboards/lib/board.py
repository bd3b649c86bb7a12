"""The dashboard around the panels: grid layout, template variables, links and the top-level
object."""

from __future__ import annotations

from typing import Any

from dashboards.lib.queries import DS

SCHEMA_VERSION = 39
TAGS = ["pacs-health-agent", "pacs", "dicom"]
OVERVIEW_UID = "pacs-overview"
TARGET_UID = "pacs-target"


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
