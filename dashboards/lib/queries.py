"""PromQL: the selectors every query filters on, the expressions several panels share, and
the query objects (`targets`) a panel carries."""

from __future__ import annotations

from typing import Any

# Every panel, query and variable reads Prometheus through the `datasource` variable.
DS = {"type": "prometheus", "uid": "${datasource}"}

# Selectors shared by all queries.
J = 'job=~"$job"'
JT_MULTI = 'job=~"$job", target=~"$target"'  # overview: target is multi-value
JT = 'job=~"$job", target="$target"'  # drill-down: one target
JTP = 'job=~"$job", target="$target", probe=~"$probe"'


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
