"""One function per Grafana panel type, each with the field defaults and options this
project uses, plus the table helpers (overrides, transformations)."""

from __future__ import annotations

from typing import Any

from dashboards.lib.queries import DS, availability, target, targets
from dashboards.lib.style import AVAILABILITY_STEPS, CODE_THRESHOLDS, GREEN, RED, thresholds


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
    """Grafana buckets the series' values itself (log 2 in y): no bucket series needed."""
    defaults = field_defaults(custom={"hideFrom": {"legend": False, "tooltip": False,
                                                   "viz": False},
                                      "scaleDistribution": {"type": "linear"}})
    options = {
        "calculate": True,
        "calculation": {"yBuckets": {"mode": "size", "scale": {"type": "log", "log": 2}}},
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


def dashed(regex: str) -> dict[str, Any]:
    """Override: series whose display name matches `regex` (Grafana's /.../ form) are dashed."""
    return {"matcher": {"id": "byRegexp", "options": regex},
            "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}]}


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


AVAILABILITY_WINDOWS = ("5m", "1h", "30d")


def availability_table(title: str, description: str, selector: str, by: str) -> dict[str, Any]:
    """Availability over 5 minutes, 1 hour and 30 days side by side (the recording rules'
    windows), coloured by the availability steps: the same table on both dashboards."""
    return table(
        title,
        description,
        targets(*(target(availability(selector, by, w), instant=True, fmt="table")
                  for w in AVAILABILITY_WINDOWS)),
        transformations=[MERGE, organize({"Value #A": "5m", "Value #B": "1h",
                                          "Value #C": "30d"})],
        overrides=[color_override(c, "percentunit", AVAILABILITY_STEPS, 3)
                   for c in AVAILABILITY_WINDOWS],
    )
