"""The metrics catalogue: every family the agent exports, described once.

Read by the Prometheus exporter (names, types, HELP, exposition order), the OTLP exporter
(instrument names, kinds, units, descriptions), tests/test_metrics_reference.py (what a real
scrape must show) and agent/metrics_doc.py, which writes the tables of docs/metrics.md and
docs/otlp.md from it. Names, types, labels and help are a contract (alerts, dashboards, the
promtool test): change one only together with everything that reads it.

OTLP names are the dotted equivalents of the Prometheus names, chosen so that a Collector's
Prometheus translation (dots → underscores, unit "s" → _seconds, "{...}" dropped, counters +
_total) gives back the /metrics name; tests/test_otlp.py checks that.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Otlp:
    """How a family is pushed over OTLP."""

    key: str  # the OTLP rows' reader: SeriesState._<key> (counters, histograms), obs_<key> (gauges)
    name: str
    kind: str  # histogram | counter | gauge (the OTLP instrument, not the Prometheus type)
    unit: str
    help: str = ""  # the instrument description when it differs from the Prometheus HELP


@dataclass(frozen=True)
class Family:
    name: str  # the exposed name (counters with their _total)
    kind: str  # Prometheus type: gauge | counter | histogram | summary
    help: str  # HELP text on /metrics
    labels: tuple[str, ...] = ()
    # "target": pre-rendered per-target fragments; "agent": a handful of prometheus_client series
    scope: str = "target"
    # docs/metrics.md table it is listed in; "conditional": exists only once there is something
    # to count, so it is described in prose, not in a table a full scrape is compared with;
    # "opt-in": exported only when a setting asks for it (prose too: dashboards and alerts must
    # not need it, and tests/test_dashboards.py reads only the tables)
    section: str = "main"
    doc: str = ""  # the meaning column of docs/metrics.md
    otlp: Otlp | None = None

    @property
    def otlp_help(self) -> str:
        return (self.otlp.help or self.help) if self.otlp else ""


FAMILIES: tuple[Family, ...] = (
    Family("probe_success", "gauge", "1 if the last run succeeded",
           labels=("target", "probe"),
           doc="1 if the last run succeeded, else 0 (blackbox_exporter style).",
           otlp=Otlp("success", "probe.success", "gauge", "",
                     help="1 if the last run succeeded (blackbox style)")),
    Family("probe_duration_seconds", "gauge", "Wall time of the last run on the wire",
           labels=("target", "probe"),
           doc="Wall time of the last run as seen on the wire (sum of its phases).",
           otlp=Otlp("last_duration", "probe.duration", "gauge", "s",
                     help="Wall time of the last run on the wire (blackbox style)")),
    Family("pacs_probe_last_run_timestamp_seconds", "gauge", "Unix time the last run started",
           labels=("target", "probe"),
           doc="Unix time the last run started (staleness: a probe that stopped running)."),
    Family("pacs_probe_duration_seconds", "histogram", "Successful runs' durations",
           labels=("target", "probe"), section="opt-in",
           doc=("Successful runs' durations, fixed buckets (1 ms … 60 s, including 2 s, the "
                "default `degradedLatency`), aggregatable across targets. Only with "
                "`agent.metrics.classicHistogram: true`."),
           otlp=Otlp("duration", "pacs.probe.duration", "histogram", "s",
                     help="Successful runs' durations on the wire")),
    Family(
        "pacs_probe_latency_seconds", "summary",
        "HDR quantiles of successful runs over the sliding window",
           labels=("target", "probe", "quantile"),
           doc=("HDR histogram quantiles 0.5/0.95/0.99 over the sliding window (successful runs "
                "only); `_sum`/`_count` are cumulative over successful runs."),
           otlp=Otlp("quantiles", "pacs.probe.latency", "gauge", "s",
                     help="HDR quantiles over the sliding window")),
    Family("pacs_probe_phase_duration_seconds", "gauge", "Last run, per phase",
           labels=("target", "probe", "phase"),
           doc=("Last run, per phase (`dns`, `connect`, `tls`, `associate`, `dimse`, "
                "`first_match`, `release`, `first_byte`, `transfer`, `first_image`, `last_image`, "
                "`store`, `findable`, ...). `first_match` and `first_image` are marks inside a "
                "longer phase (`dimse`, `last_image`) and are not added to the run's duration."),
           otlp=Otlp("phase", "pacs.probe.phase.duration", "histogram", "s",
                     help="Successful runs' phase durations (connect, associate, dimse, ...)")),
    Family("pacs_probe_runs_total", "counter", "Runs by result",
           labels=("target", "probe", "result"),
           doc="Runs by `result` (`success`, `failure`).",
           otlp=Otlp("runs", "pacs.probe.runs", "counter", "{run}")),
    Family("pacs_probe_failures_total", "counter", "Failed runs by reason",
           labels=("target", "probe", "reason"),
           doc="Failed runs by reason (see below).",
           otlp=Otlp("failures", "pacs.probe.failures", "counter", "{failure}")),
    Family("pacs_probe_attempts_total", "counter", "Attempts including retries",
           labels=("target", "probe"),
           doc=("Attempts including retries (`retryPolicy`); greater than runs when retries "
                "happened."),
           otlp=Otlp("attempts", "pacs.probe.attempts", "counter", "{attempt}")),
    Family("pacs_check_status", "gauge", "1 for the check's current status",
           labels=("target", "probe", "status"),
           doc="1 for the check's current status (`PASS`, `WARN`, `FAIL`), 0 for the others.",
           otlp=Otlp("check", "pacs.check.status", "gauge", "{status}")),
    Family("pacs_target_health", "gauge", "1 for the target's current state",
           labels=("target", "state"),
           doc=("1 for the target's current state (`HEALTHY`, `DEGRADED`, `UNHEALTHY`, or "
                "`UNKNOWN` until its first result), 0 for the others."),
           otlp=Otlp("target_health", "pacs.target.health", "gauge", "{state}")),
    Family("pacs_failover_active", "gauge", "1 for the endpoint currently serving",
           labels=("target", "endpoint"),
           doc=("1 for the endpoint (`primary`, `secondary`, then `secondary2`, ... per "
                "configured DICOM node) currently serving, 0 otherwise; all 0 when none serves."),
           otlp=Otlp("failover_active", "pacs.failover.active", "gauge", "{endpoint}")),
    Family(
        "pacs_failover_endpoint_up", "gauge",
        "1 if the failover endpoint answered in the last run",
           labels=("target", "endpoint"),
           doc=("1 if that endpoint answered in the last `failover` run, 0 if not (every endpoint "
                "0 when the run failed). A dead standby reads 0 here while `pacs_failover_active` "
                "still shows the primary serving."),
           otlp=Otlp("failover_endpoint_up", "pacs.failover.endpoint.up", "gauge", "{endpoint}")),
    Family("pacs_probe_dicom_status_total", "counter", "Failed runs by DICOM status or rejection",
           labels=("target", "probe", "status"), section="conditional",
           doc="Failed runs of a DICOM probe by the status the PACS stated (see below).",
           otlp=Otlp("dicom_status", "pacs.probe.dicom_status", "counter", "{run}")),
    Family(
        "pacs_dicom_context_accepted", "gauge",
        "1 if the PACS accepted the SOP class with the transfer syntax",
           labels=("target", "sop_class", "transfer_syntax"),
           doc=("1 if the PACS accepted the (SOP class UID, transfer syntax UID) pair in the last "
                "`dicom_capabilities` run, 0 if it refused it (every pair 0 after a run that "
                "failed). One series per configured pair, at most 128 per target; only for "
                "targets with a `probes.dicom_capabilities` block."),
           otlp=Otlp("context_accepted", "pacs.dicom.context.accepted", "gauge", "")),
    Family("probe_ssl_earliest_cert_expiry", "gauge", "Earliest certificate expiry (unix time)",
           labels=("target", "probe"),
           doc=("Unix time the earliest-expiring certificate of the peer's verified chain (leaf, "
                "intermediates, root) expires, so an intermediate that expires before the leaf is "
                "what counts (and what `certExpiryWarningDays` warns about); absent for probes "
                "without TLS."),
           otlp=Otlp("tls_earliest", "probe.ssl_earliest_cert_expiry", "gauge", "",
                     help="Earliest certificate expiry (unix time, seconds)")),
    Family(
        "pacs_tls_cert_not_after_timestamp_seconds", "gauge",
        "Leaf certificate expiry (unix time)",
           labels=("target", "probe"),
           doc="Unix time the peer's leaf certificate expires.",
           otlp=Otlp("tls_leaf", "pacs.tls.cert.not_after_timestamp", "gauge", "s")),
    Family("probe_tls_version_info", "gauge", "TLS version the last handshake negotiated",
           labels=("target", "probe", "version"),
           doc=("Always 1; `version` is the TLS version the last handshake negotiated (`TLS 1.2`, "
                "`TLS 1.3`; as blackbox_exporter). The agent requires at least TLS 1.2; "
                '`config.tls.minVersion: "1.3"` requires 1.3 (a peer without it fails with reason '
                "`tls`). Absent for probes without TLS.")),
    Family("pacs_latency_out_of_range_total", "counter", "Latencies outside the HDR range, clamped",
           labels=("target", "probe"),
           doc="Latencies outside the HDR histogram's range, clamped and counted.",
           otlp=Otlp("out_of_range", "pacs.latency.out_of_range", "counter", "{measurement}")),
    Family("pacs_scheduler_missed_runs_total", "counter", "Scheduled runs missed or skipped",
           labels=("target", "probe"),
           doc=("Scheduled runs the scheduler missed or skipped (pool busy, previous run still "
                "going).")),
    Family("pacs_slo_objective_ratio", "gauge", "Service-level objective (0.999 for 99.9 %)",
           labels=("target", "probe", "slo"), section="slo",
           doc=("The objective as a ratio (0.999 for 99.9 %); `slo` is `availability` (successful "
                "runs / runs, from `pacs_probe_runs_total`) or `latency` (runs within the "
                "threshold / successful runs). Set when the target is (re)loaded."),
           otlp=Otlp("slo_objective", "pacs.slo.objective", "gauge", "1")),
    Family(
        "pacs_probe_slow_runs_total", "counter",
        "Successful runs over the latency SLO threshold",
           labels=("target", "probe"), section="slo",
           doc=("Successful runs that took longer than the latency SLO's threshold; present (from "
                "0) only for probes with a latency SLO. Failed runs are never counted here: they "
                "spend availability budget."),
           otlp=Otlp("slow_runs", "pacs.probe.slow_runs", "counter", "{run}")),
    Family("pacs_target_maintenance", "gauge", "1 while the target is in a maintenance window",
           labels=("target",), section="thresholds",
           doc=("1 while the target is inside one of its `maintenance` windows, else 0. Probes "
                "keep running and recording; every page and ticket alert has `unless on(target) "
                "pacs_target_maintenance == 1`."),
           otlp=Otlp("maintenance", "pacs.target.maintenance", "gauge", "")),
    Family(
        "pacs_target_degraded_latency_seconds", "gauge",
        "The target's degradedLatency (p95 above it is DEGRADED)",
           labels=("target",), section="thresholds",
           doc=("The target's `healthCheck.degradedLatency` in seconds: a windowed p95 above it "
                "makes the check WARN, and `PacsLatencyP95High` compares against it."),
           otlp=Otlp("degraded_latency", "pacs.target.degraded_latency", "gauge", "s",
                     help="The target's degradedLatency")),
    Family(
        "pacs_target_cert_expiry_warning_seconds", "gauge",
        "The target's certExpiryWarningDays in seconds",
           labels=("target",), section="thresholds",
           doc=("The target's `healthCheck.certExpiryWarningDays` in seconds; "
                "`PacsCertificateExpiringSoon` compares against it."),
           otlp=Otlp("cert_warning", "pacs.target.cert_expiry_warning", "gauge", "s",
                     help="The target's certExpiryWarningDays, in seconds")),
    Family("pacs_agent_health", "gauge", "1 for the worst target state",
           labels=("state",), scope="agent",
           doc=("Worst target state, same encoding (UNHEALTHY, then DEGRADED, then UNKNOWN, then "
                "HEALTHY); UNKNOWN when no target has reported yet."),
           otlp=Otlp("agent_health", "pacs.agent.health", "gauge", "{state}")),
    Family(
        "pacs_scheduler_start_lateness_seconds", "histogram",
        "Actual minus scheduled start time",
           scope="agent",
           doc="Actual − scheduled start time of every run. At 20 runs a second and more, runs "
               "start in rounds 50 ms apart, and this includes the wait for the round."),
    Family(
        "pacs_agent_self_probe_overhead_seconds", "gauge",
        "Reported duration of a C-ECHO to the agent's own in-process loopback SCP",
           scope="agent",
           doc=("Duration the agent reports for a C-ECHO to its own in-process loopback SCP: the "
                "agent's own timing overhead."),
           otlp=Otlp("self_probe", "pacs.agent.self_probe.overhead", "gauge", "s",
                     help="Reported duration of a C-ECHO to the agent's own loopback SCP")),
    Family("pacs_agent_targets", "gauge", "Targets this agent probes",
           scope="agent",
           doc="Targets this agent (shard) probes.",
           otlp=Otlp("targets_count", "pacs.agent.targets", "gauge", "{target}")),
    Family("pacs_agent_info", "gauge", "Agent version and shard",
           labels=("version", "shard"), scope="agent",
           doc="Always 1; carries the version and the shard (`i/n`)."),
    Family("pacs_config_last_reload_successful", "gauge", "1 if the last config load succeeded",
           scope="agent",
           doc="1 if the last config (re)load succeeded."),
    Family(
        "pacs_config_last_reload_success_timestamp_seconds", "gauge",
        "Unix time of the last successful config load",
           scope="agent",
           doc="Unix time of the last successful config load."),
    Family("pacs_otlp_export_failures_total", "counter", "OTLP export attempts that failed",
           scope="agent",
           doc="OTLP export attempts that failed."),
)

BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
TARGET_FAMILIES: tuple[Family, ...] = tuple(f for f in FAMILIES if f.scope == "target")
AGENT_FAMILIES: tuple[Family, ...] = tuple(f for f in FAMILIES if f.scope == "agent")
OTLP_FAMILIES: tuple[Family, ...] = tuple(f for f in FAMILIES if f.otlp is not None)


def family(name: str) -> Family:
    return BY_NAME[name]


__all__ = [
    "AGENT_FAMILIES",
    "BY_NAME",
    "FAMILIES",
    "OTLP_FAMILIES",
    "TARGET_FAMILIES",
    "Family",
    "Otlp",
    "family",
]
