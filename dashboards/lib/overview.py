"""PACS / Overview: every target's state, availability, error budget, latency, failures,
failover and certificates, and the agents' own health."""

from __future__ import annotations

from typing import Any

from dashboards.lib.board import (
    DASHBOARD_LINKS,
    DRILLDOWN_LINK,
    JOB_VAR,
    OVERVIEW_UID,
    Layout,
    dashboard,
    datasource_var,
    query_var,
)
from dashboards.lib.panels import (
    LEGEND_LIST,
    MERGE,
    availability_table,
    bargauge,
    color_override,
    dashed,
    organize,
    stat,
    state_timeline,
    table,
    timeseries,
)
from dashboards.lib.queries import (
    JT_MULTI,
    J,
    availability,
    budget_remaining,
    burn_rate,
    check_code,
    state_code,
    target,
    targets,
)
from dashboards.lib.style import (
    BLUE,
    BUDGET_STEPS,
    BURN_STEPS,
    CHECK_MAP,
    DEGRADED_LATENCY,
    ENDPOINT_MAP,
    EXPIRY_STEPS,
    GREEN,
    ORANGE,
    RED,
    RELOAD_MAP,
    STATE_MAP,
    STATE_THRESHOLDS,
    UP_MAP,
    thresholds,
)


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
    lay.add(availability_table(
        "Availability by target and probe",
        "Successful runs / all runs over 5 minutes, 1 hour and 30 days (recording rules "
        "target_probe:pacs_probe_availability:ratio_rate*).",
        JT_MULTI, "target, probe",
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
        "p95 by probe, all selected targets",
        "Per probe, the highest HDR p95 among the selected targets "
        "(pacs_probe_latency_seconds{quantile=\"0.95\"}): the p95 of all their runs together "
        "is never above it (each target has 95 % of its runs at or below its own p95, so the "
        "pooled runs do too), and it is exact for one target. Dashed: the mean of all their "
        "successful runs (rate of pacs_probe_latency_seconds_sum / _count), exact.",
        targets(
            target(f'max by (probe) (pacs_probe_latency_seconds{{{JT_MULTI}, quantile="0.95"}})',
                   "{{probe}} p95 (worst target)"),
            target(f"sum by (probe) (rate(pacs_probe_latency_seconds_sum{{{JT_MULTI}}}"
                   "[$__rate_interval])) / sum by (probe) (rate("
                   f"pacs_probe_latency_seconds_count{{{JT_MULTI}}}[$__rate_interval]))",
                   "{{probe}} mean"),
        ),
        "s", threshold=DEGRADED_LATENCY, legend=LEGEND_LIST,
        overrides=[dashed("/ mean$/")],
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
