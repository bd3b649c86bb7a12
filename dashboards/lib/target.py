"""PACS / Target: one target in detail (state history, per-phase latency, HDR quantiles,
failure reasons, availability, failover, certificates, DICOM capabilities)."""

from __future__ import annotations

from typing import Any

from dashboards.lib.board import (
    DASHBOARD_LINKS,
    JOB_VAR,
    TARGET_UID,
    Layout,
    dashboard,
    datasource_var,
    query_var,
)
from dashboards.lib.panels import (
    LEGEND_LIST,
    availability_table,
    bargauge,
    heatmap,
    organize,
    stat,
    state_timeline,
    table,
    timeseries,
)
from dashboards.lib.queries import (
    JT,
    JTP,
    J,
    check_code,
    state_code,
    target,
    targets,
)
from dashboards.lib.style import (
    ACCEPTED_MAP,
    BLUE,
    CHECK_MAP,
    CODE_THRESHOLDS,
    DEGRADED_LATENCY,
    ENDPOINT_MAP,
    EXPIRY_STEPS,
    MAINTENANCE_MAP,
    STATE_MAP,
    STATE_THRESHOLDS,
    SUCCESS_MAP,
    UP_MAP,
    thresholds,
)


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
        "Last run vs. p95",
        "Wall time of the last run (probe_duration_seconds) against the p95 of the successful "
        "runs in the agent's sliding window (HDR, pacs_probe_latency_seconds{quantile=\"0.95\"}): "
        "a last run far above the line is an outlier, one that stays above it moves the p95.",
        targets(
            target(f"max by (probe) (probe_duration_seconds{{{JTP}}})", "{{probe}} last run"),
            target(f'max by (probe) (pacs_probe_latency_seconds{{{JTP}, quantile="0.95"}})',
                   "{{probe}} p95"),
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
        "Successful runs by duration over time: Grafana buckets the last successful run's wall "
        "time (probe_duration_seconds where probe_success is 1) as Prometheus sampled it, on a "
        "log-2 scale. Each run counts once per scrape it was the latest for, so the shape is "
        "the runs' distribution when the selected probes share an interval.",
        targets(target(
            f"probe_duration_seconds{{{JTP}}} and probe_success{{{JTP}}} == 1", "{{probe}}")),
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
    lay.add(availability_table(
        "Availability",
        "Successful runs / all runs (recording rules target_probe:pacs_probe_availability:*).",
        JTP, "probe",
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
