#!/usr/bin/env python3
"""Writes the promtool unit tests of the error-budget rules (pacs-health-agent.slo.yml):

  slo.test.yml       fast and medium burn, maintenance, one page per outage (1-minute steps)
  slo-slow.test.yml  slow burn (3-day window: 5-minute evaluation steps)

Generated because the cases are arithmetic: for each alert and each SLI (availability, latency)
a steady burn 1 % above the alert's factor fires, 1 % below stays silent, and a burst shorter
than the alert's `for:` stays silent. The counters are written out per minute from the rates.
tests/test_slo_rules.py fails when the committed files differ from this script's output.

    python3 alerts/tests/generate_slo_tests.py
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RUNBOOK = "docs/runbooks.md#"
RUNS_PER_MINUTE = 1000
AGENT = 'job="pacs-health-agent", instance="agent-1:9887"'
TARGET = "pacs-prod"
PROBE = "dicom_find"
TP = f'{AGENT}, target="{TARGET}", probe="{PROBE}"'


class Alert:
    def __init__(
        self,
        name: str,
        factor: float,
        long: str,
        short: str,
        for_: str,
        severity: str,
        share: str,
        span: str,
        exhaust: str,
        fire_at: int,
        early: int = 1,
    ) -> None:
        self.name, self.factor, self.long, self.short = name, factor, long, short
        # fire_at: an evaluation after `for:` has passed; early: one before it (both on the
        # evaluation grid of the alert's test file)
        self.for_, self.severity, self.fire_at, self.early = for_, severity, fire_at, early
        self.share, self.span, self.exhaust = share, span, exhaust

    def labels(self, slo: str) -> dict[str, str]:
        return {
            "severity": self.severity,
            "long_window": self.long,
            "short_window": self.short,
            "job": "pacs-health-agent",
            "target": TARGET,
            "probe": PROBE,
            "slo": slo,
        }

    def annotations(self, slo: str) -> dict[str, str]:
        f = f"{self.factor:g}"
        return {
            "summary": f"PACS {TARGET} {PROBE} burns its {slo} error budget {f}x too fast",
            "description": (
                f"{PROBE} on {TARGET} is spending its {slo} error budget more than {f} times as "
                f"fast as its 30-day objective allows, over {self.long} and still over "
                f"{self.short}: at this rate {self.share} of the month's budget goes in "
                f"{self.span} and all of it in {self.exhaust}."
            ),
            "runbook_url": RUNBOOK + self.name.lower(),
        }

    def expect(self, slo: str) -> list[dict[str, Any]]:
        return [{"exp_labels": self.labels(slo), "exp_annotations": self.annotations(slo)}]


FAST = Alert(
    "PacsErrorBudgetBurnFast",
    14.4,
    "1h",
    "5m",
    "2m",
    "page",
    "2 %",
    "1 hour",
    "about 2 days",
    fire_at=10,
)
MEDIUM = Alert(
    "PacsErrorBudgetBurnMedium",
    6,
    "6h",
    "30m",
    "15m",
    "page",
    "5 %",
    "6 hours",
    "5 days",
    fire_at=40,
)
SLOW = Alert(
    "PacsErrorBudgetBurnSlow",
    1,
    "3d",
    "6h",
    "3h",
    "ticket",
    "10 %",
    "3 days",
    "30 days",
    fire_at=240,
    early=5,
)
# Objectives of the steady cases (read from pacs_slo_objective_ratio: different per SLI on
# purpose) and of the burst cases (99.9 %: a burst of at most RUNS_PER_MINUTE bad runs a minute
# must be able to cross the threshold).
STEADY_OBJECTIVE = {"availability": 0.995, "latency": 0.95}
BURST_OBJECTIVE = 0.999


def counter(per_minute: Sequence[float]) -> str:
    """promtool expanding notation for a counter starting at 0 that grows by per_minute[i]
    between minute i and i+1: runs of equal increments become one 'a+dxn' term."""
    terms: list[str] = []
    value, i = 0.0, 0
    while i < len(per_minute):
        d, n = per_minute[i], 1
        while i + n < len(per_minute) and per_minute[i + n] == d:
            n += 1
        start = value if not terms else value + d
        terms.append(f"{num(start)}+{num(d)}x{n if not terms else n - 1}")
        value += d * n
        i += n
    return " ".join(terms)


def num(v: float) -> str:
    """Exact enough for promtool (counters reach millions with fractional steps)."""
    return f"{round(v, 6):.12g}"


def series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f"{name}{{{labels}}}", "values": values}


def constant(value: float, minutes: int) -> str:
    return f"{num(value)}+0x{minutes}"


def sli_series(slo: str, bad: Sequence[float], objective: float) -> list[dict[str, str]]:
    """Counters of one probe over len(bad) minutes with `bad[i]` bad runs in minute i, and
    its objective gauge. Availability: bad runs are failed runs. Latency: every run succeeds,
    bad runs are slow ones."""
    minutes = len(bad)
    total = [float(RUNS_PER_MINUTE)] * minutes
    out = [series("pacs_slo_objective_ratio", f'{TP}, slo="{slo}"', constant(objective, minutes))]
    if slo == "availability":
        out.append(
            series(
                "pacs_probe_runs_total",
                f'{TP}, result="success"',
                counter([t - b for t, b in zip(total, bad, strict=True)]),
            )
        )
        out.append(series("pacs_probe_runs_total", f'{TP}, result="failure"', counter(bad)))
    else:
        out.append(series("pacs_probe_runs_total", f'{TP}, result="success"', counter(total)))
        out.append(
            series("pacs_probe_runs_total", f'{TP}, result="failure"', counter([0.0] * minutes))
        )
        out.append(series("pacs_probe_slow_runs_total", TP, counter(bad)))
    return out


def steady(alert: Alert, slo: str, ratio_of_factor: float, minutes: int) -> list[float]:
    objective = STEADY_OBJECTIVE[slo]
    return [RUNS_PER_MINUTE * ratio_of_factor * alert.factor * (1 - objective)] * minutes


def silent(alert: Alert, times: Sequence[int]) -> list[dict[str, Any]]:
    return [{"eval_time": f"{t}m", "alertname": alert.name, "exp_alerts": []} for t in times]


def steady_groups(alert: Alert, slo: str, interval: str) -> list[dict[str, Any]]:
    minutes = alert.fire_at + 30
    over = sli_series(slo, steady(alert, slo, 1.01, minutes), STEADY_OBJECTIVE[slo])
    if alert is FAST and slo == "availability":  # a target known not to be in maintenance
        over.append(
            series("pacs_target_maintenance", f'{AGENT}, target="{TARGET}"', constant(0, minutes))
        )
    under = sli_series(slo, steady(alert, slo, 0.99, minutes), STEADY_OBJECTIVE[slo])
    pct = f"{STEADY_OBJECTIVE[slo] * 100:g} %"
    return [
        {
            "name": f"fires: {slo} {pct}, burn rate 1 % above {alert.factor:g} ({alert.name})",
            "interval": interval,
            "input_series": over,
            "alert_rule_test": [
                *silent(alert, [alert.early]),
                {
                    "eval_time": f"{alert.fire_at}m",
                    "alertname": alert.name,
                    "exp_alerts": alert.expect(slo),
                },
            ],
        },
        {
            "name": f"healthy: {slo} {pct}, burn rate 1 % below {alert.factor:g} ({alert.name})",
            "interval": interval,
            "input_series": under,
            "alert_rule_test": silent(alert, [alert.fire_at, minutes - alert.early]),
        },
    ]


def burst_group(
    alert: Alert,
    slo: str,
    interval: str,
    bad: list[float],
    times: Sequence[int],
    what: str,
) -> dict[str, Any]:
    return {
        "name": f"blip: {slo}: {what} ({alert.name})",
        "interval": interval,
        "input_series": sli_series(slo, bad, BURST_OBJECTIVE),
        "alert_rule_test": silent(alert, times),
    }


def bursts(minutes: int, at: dict[int, float]) -> list[float]:
    return [at.get(m, 0.0) for m in range(minutes)]


def fast_blip(slo: str) -> dict[str, Any]:
    # 960 bad runs in minute 59: the 1-hour ratio crosses 14.4 x 0.1 % only once the last
    # 5-minute rate holding the burst is recorded (t = 64m), and the 5-minute ratio falls back
    # a minute later: over both thresholds for 1 minute, under the 2m `for:`.
    return burst_group(
        FAST,
        slo,
        "1m",
        bursts(75, {59: 960.0}),
        range(58, 70),
        "960 of 1,000 runs bad in one minute",
    )


def medium_blip(slo: str) -> dict[str, Any]:
    # 1,500 bad runs at the start and 1,500 just before the 6-hour mark: each alone is under
    # 6 x 0.1 % of 6 hours of runs, together over it only until the first leaves the window.
    bad = bursts(400, {0: 750.0, 1: 750.0, 352: 750.0, 353: 750.0})
    return burst_group(
        MEDIUM, slo, "1m", bad, range(340, 400, 2), "two bursts of 1,500 bad runs 6 hours apart"
    )


def slow_blip(slo: str) -> dict[str, Any]:
    # The same over 3 days: 3,000 bad runs at the start and 3,000 half an hour before the
    # 3-day mark, each under 1 x 0.1 % of 3 days of runs, together over it for about 40 min.
    three_days = 3 * 24 * 60
    at = {m: 1000.0 for m in (0, 1, 2, three_days - 30, three_days - 29, three_days - 28)}
    return burst_group(
        SLOW,
        slo,
        "1m",
        bursts(three_days + 60, at),
        range(three_days - 60, three_days + 60, 5),
        "two bursts of 3,000 bad runs 3 days apart",
    )


def maintenance_groups() -> list[dict[str, Any]]:
    hour = 90
    burning = sli_series(
        "availability", steady(FAST, "availability", 1.01, hour), STEADY_OBJECTIVE["availability"]
    )
    # every run fails during a 40-minute maintenance window, then the PACS is back
    outage = [float(RUNS_PER_MINUTE) if m < 40 else 0.0 for m in range(hour)]
    maint = [1.0 if m < 40 else 0.0 for m in range(hour)]
    maint_values = " ".join(f"{v:g}" for v in maint)
    return [
        {
            "name": "healthy: a target in maintenance does not page, however fast it burns",
            "interval": "1m",
            "input_series": [
                *burning,
                series("pacs_target_maintenance", f'{AGENT}, target="{TARGET}"', constant(1, hour)),
            ],
            "alert_rule_test": silent(FAST, [FAST.fire_at, 60]) + silent(MEDIUM, [60, 89]),
        },
        {
            "name": "healthy: failures during maintenance spend no budget, so nothing pages after",
            "interval": "1m",
            "input_series": [
                *sli_series("availability", outage, STEADY_OBJECTIVE["availability"]),
                series("pacs_target_maintenance", f'{AGENT}, target="{TARGET}"', maint_values),
            ],
            "alert_rule_test": (
                silent(FAST, [20, 41, 42, 45, 50, 60, 89]) + silent(MEDIUM, [41, 45, 60, 89])
            ),
            "promql_expr_test": [
                {
                    "expr": "target_probe_slo:pacs_slo_errors:ratio_rate1h",
                    "eval_time": "89m",
                    "exp_samples": [
                        {
                            "labels": (
                                "target_probe_slo:pacs_slo_errors:ratio_rate1h{"
                                f'job="pacs-health-agent", target="{TARGET}", '
                                f'probe="{PROBE}", slo="availability"}}'
                            ),
                            "value": 0,
                        }
                    ],
                },
            ],
        },
    ]


def outage_series(minutes: int) -> list[dict[str, str]]:
    """Every run fails from minute 1 to 30; the agent reports the target UNHEALTHY from
    minute 2 (failureThreshold runs in a row) until a minute after it is back."""
    outage = [float(RUNS_PER_MINUTE) if 1 <= m < 31 else 0.0 for m in range(minutes)]
    unhealthy = " ".join("1" if 2 <= m < 32 else "0" for m in range(minutes))
    healthy = " ".join("0" if 2 <= m < 32 else "1" for m in range(minutes))
    health = f'{AGENT}, target="{TARGET}"'
    return [
        *sli_series("availability", outage, STEADY_OBJECTIVE["availability"]),
        series("pacs_target_health", f'{health}, state="UNHEALTHY"', unhealthy),
        series("pacs_target_health", f'{health}, state="HEALTHY"', healthy),
        series("pacs_target_health", f'{health}, state="DEGRADED"', constant(0, minutes)),
    ]


def outage_ticket_group() -> dict[str, Any]:
    """The outage of one_page_group() still spends the month's budget: the slow-burn ticket."""
    return {
        "name": "fires: an outage the state alert paged for still spends budget (ticket)",
        "interval": "1m",
        "input_series": outage_series(SLOW.fire_at + 10),
        "alert_rule_test": [
            *silent(SLOW, [SLOW.early]),
            {
                "eval_time": f"{SLOW.fire_at}m",
                "alertname": SLOW.name,
                "exp_alerts": SLOW.expect("availability"),
            },
        ],
    }


def one_page_group() -> dict[str, Any]:
    """A 30-minute outage: PacsTargetUnhealthy pages; the fast and medium burn pages, which
    would fire on the same failures, stay silent (during it, and after it while their long
    windows still hold its failures)."""
    return {
        "name": "fires: an outage pages once (PacsTargetUnhealthy, no burn-rate page)",
        "interval": "1m",
        "input_series": outage_series(75),
        "alert_rule_test": [
            {
                "eval_time": "10m",
                "alertname": "PacsTargetUnhealthy",
                "exp_alerts": [
                    {
                        "exp_labels": {
                            "severity": "page",
                            "job": "pacs-health-agent",
                            "instance": "agent-1:9887",
                            "target": TARGET,
                            "state": "UNHEALTHY",
                        },
                        "exp_annotations": {
                            "summary": f"PACS {TARGET} is UNHEALTHY",
                            "description": (
                                f"Agent agent-1:9887 reports target {TARGET} UNHEALTHY: at least "
                                "one check failed on failureThreshold (default 3) consecutive "
                                "runs."
                            ),
                            "runbook_url": RUNBOOK + "pacstargetunhealthy",
                        },
                    }
                ],
            },
            *silent(FAST, [3, 5, 10, 20, 30, 33, 35, 40, 60, 74]),
            *silent(MEDIUM, [20, 30, 40, 60, 74]),
        ],
    }


def test_file(
    groups: list[dict[str, Any]],
    evaluation_interval: str,
    what: str,
    with_state_alerts: bool,
) -> str:
    # Only the rules these cases need: promtool's cost is per rule and evaluation step (the
    # state alerts are needed where PacsTargetUnhealthy has to silence the burn-rate pages).
    rule_files = ["../pacs-health-agent.slo.yml"]
    if with_state_alerts:
        rule_files.insert(0, "../pacs-health-agent.alerts.yml")
    doc = {
        "rule_files": rule_files,
        "evaluation_interval": evaluation_interval,
        "tests": groups,
    }
    head = (
        f"# promtool unit tests of pacs-health-agent.slo.yml: {what}.\n"
        "# GENERATED by generate_slo_tests.py: edit that, then run it.\n"
    )
    return head + yaml.safe_dump(doc, sort_keys=False, width=100)


def files() -> dict[str, str]:
    fast_medium: list[dict[str, Any]] = []
    slow: list[dict[str, Any]] = []
    for slo in ("availability", "latency"):
        fast_medium += steady_groups(FAST, slo, "1m") + [fast_blip(slo)]
        fast_medium += steady_groups(MEDIUM, slo, "1m")
        slow += steady_groups(SLOW, slo, "1m")
    # One burst case for the long windows (the SLIs differ only in their base rates, which the
    # cases above cover): each takes as long as promtool runs all the others.
    fast_medium += [medium_blip("availability")]
    slow += [slow_blip("availability"), outage_ticket_group()]
    fast_medium += maintenance_groups() + [one_page_group()]
    return {
        "slo.test.yml": test_file(
            fast_medium,
            "1m",
            "fast and medium burn, maintenance, one page per outage",
            with_state_alerts=True,
        ),
        "slo-slow.test.yml": test_file(
            slow, "5m", "slow burn (3-day window, 5-minute steps)", with_state_alerts=False
        ),
    }


def main(write: Callable[[Path, str], Any] = lambda p, t: p.write_text(t)) -> None:
    for name, text in files().items():
        write(HERE / name, text)


if __name__ == "__main__":
    main()
