"""Prometheus exporter: metric values are set when a result arrives, so a scrape only renders.

Names and labels are the contract in DESIGN §3 and docs/metrics.md.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from agent import __version__
from agent.evaluator import CheckState, CheckStatus, HealthState
from agent.recorder import QUANTILES
from probes.base import NON_ADDITIVE_PHASES, ProbeResult, Reason

# `_created` series double every counter and histogram for no use here (Prometheus ignores them
# in the text format); at 1,000 targets that is ~100k extra lines per scrape.
disable_created_metrics()

DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
STATES = (HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY)
STATUSES = (CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL)
FAILOVER_ENDPOINTS = ("primary", "secondary")


class _LatencySummary(Collector):
    """pacs_probe_latency_seconds: values kept at record time, rendered as they are."""

    NAME = "pacs_probe_latency_seconds"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: dict[tuple[str, str], tuple[dict[float, float], int, float]] = {}

    def update(self, t: str, p: str, q: dict[float, float], duration: float | None) -> None:
        with self._lock:
            _, count, total = self._state.get((t, p), ({}, 0, 0.0))
            if duration is not None:
                count, total = count + 1, total + duration
            self._state[(t, p)] = (dict(q), count, total)

    def remove_target(self, target: str) -> None:
        with self._lock:
            for key in [k for k in self._state if k[0] == target]:
                del self._state[key]

    def describe(self) -> list[Metric]:
        return [Metric(self.NAME, "HDR quantiles of successful runs over the sliding window",
                       "summary")]

    def collect(self) -> list[Metric]:
        m = Metric(self.NAME, "HDR quantiles of successful runs over the sliding window", "summary")
        with self._lock:
            items = list(self._state.items())
        for (t, p), (q, count, total) in items:
            for quantile in QUANTILES:
                if quantile in q:
                    m.add_sample(self.NAME, {"target": t, "probe": p, "quantile": str(quantile)},
                                 q[quantile])
            m.add_sample(self.NAME + "_count", {"target": t, "probe": p}, count)
            m.add_sample(self.NAME + "_sum", {"target": t, "probe": p}, total)
        return [m]


class PrometheusExporter:
    def __init__(self, shard: str = "0/1") -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        tp = ["target", "probe"]
        self.success = Gauge("probe_success", "1 if the last run succeeded", tp, registry=r)
        self.duration = Gauge(
            "probe_duration_seconds", "Wall time of the last run on the wire", tp, registry=r
        )
        self.hist = Histogram(
            "pacs_probe_duration_seconds", "Successful runs' durations", tp,
            buckets=DURATION_BUCKETS, registry=r,
        )
        # A summary: windowed HDR quantiles plus cumulative _sum/_count of successful runs, so
        # the `quantile` label is typed the way Prometheus tooling expects (promtool checks it).
        self.latency = _LatencySummary()
        r.register(self.latency)
        self.phase = Gauge(
            "pacs_probe_phase_duration_seconds", "Last run, per phase", [*tp, "phase"], registry=r
        )
        self.runs = Counter("pacs_probe_runs", "Runs by result", [*tp, "result"], registry=r)
        self.failures = Counter(
            "pacs_probe_failures", "Failed runs by reason", [*tp, "reason"], registry=r
        )
        self.attempts = Counter(
            "pacs_probe_attempts", "Attempts including retries", tp, registry=r
        )
        self.check = Gauge(
            "pacs_check_status", "1 for the check's current status", [*tp, "status"], registry=r
        )
        self.target = Gauge(
            "pacs_target_health", "1 for the target's current state", ["target", "state"], registry=r
        )
        self.agent = Gauge("pacs_agent_health", "1 for the worst target state", ["state"], registry=r)
        self.failover = Gauge(
            "pacs_failover_active", "1 for the endpoint currently serving",
            ["target", "endpoint"], registry=r,
        )
        self.ssl_earliest = Gauge(
            "probe_ssl_earliest_cert_expiry", "Earliest certificate expiry (unix time)", tp, registry=r
        )
        self.ssl_leaf = Gauge(
            "pacs_tls_cert_not_after_timestamp_seconds", "Leaf certificate expiry (unix time)",
            tp, registry=r,
        )
        self.out_of_range = Counter(
            "pacs_latency_out_of_range", "Latencies outside the HDR range, clamped", tp, registry=r
        )
        self.missed = Counter(
            "pacs_scheduler_missed_runs", "Scheduled runs missed or skipped", tp, registry=r
        )
        self.lateness = Histogram(
            "pacs_scheduler_start_lateness_seconds", "Actual minus scheduled start time",
            buckets=LATENESS_BUCKETS, registry=r,
        )
        self.self_probe = Gauge(
            "pacs_agent_self_probe_overhead_seconds",
            "Reported duration of a C-ECHO to the agent's own in-process loopback SCP",
            registry=r,
        )
        self.targets_gauge = Gauge("pacs_agent_targets", "Targets this agent probes", registry=r)
        self.info = Gauge("pacs_agent_info", "Agent version and shard", ["version", "shard"], registry=r)
        self.info.labels(__version__, shard).set(1)
        self.reload_ok = Gauge(
            "pacs_config_last_reload_successful", "1 if the last config load succeeded", registry=r
        )
        self.reload_ts = Gauge(
            "pacs_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load", registry=r,
        )
        self.otlp_failures = Counter(
            "pacs_otlp_export_failures", "OTLP export attempts that failed", registry=r
        )
        for s in STATES:
            self.agent.labels(s.value).set(0)
        self._phases_seen: dict[tuple[str, str], set[str]] = {}

    # -- per target ---------------------------------------------------------------------------

    def add_target(self, target: str, probes: list[str]) -> None:
        """Create every series a target will have, so absent() and rate() work from the start."""
        with self._lock:
            for s in STATES:
                self.target.labels(target, s.value).set(0)
            for p in probes:
                for res in ("success", "failure"):
                    self.runs.labels(target, p, res)
                # failures{reason} are not pre-created: 12 reasons × probes × targets would be
                # most of the scrape; alert on runs_total{result="failure"}, which exists from start.
                self.attempts.labels(target, p)
                self.missed.labels(target, p)

    def remove_target(self, target: str) -> None:
        with self._lock:
            self.latency.remove_target(target)
            for metric in (self.success, self.duration, self.hist, self.phase,
                           self.runs, self.failures, self.attempts, self.check, self.target,
                           self.failover, self.ssl_earliest, self.ssl_leaf, self.out_of_range,
                           self.missed):
                for labels in list(metric._metrics):  # noqa: SLF001 - prometheus_client has no API
                    if labels and labels[0] == target:
                        metric.remove(*labels)

    def observe(
        self,
        r: ProbeResult,
        quantiles: dict[float, float],
        check: CheckState,
        target_state: HealthState,
        agent_state: HealthState,
        out_of_range: int = 0,
    ) -> None:
        t, p = r.target, r.probe
        with self._lock:
            self.success.labels(t, p).set(1 if r.ok else 0)
            self.duration.labels(t, p).set(r.duration)
            self.runs.labels(t, p, "success" if r.ok else "failure").inc()
            self.attempts.labels(t, p).inc(r.attempts)
            if r.ok:
                self.hist.labels(t, p).observe(r.duration)
            else:
                self.failures.labels(t, p, (r.reason or Reason.ERROR).value).inc()
            self.latency.update(t, p, quantiles, r.duration if r.ok else None)
            seen = self._phases_seen.setdefault((t, p), set())
            for name in seen - set(r.phases):
                self.phase.remove(t, p, name)  # a phase this run did not reach is not stale data
            for name, v in r.phases.items():
                self.phase.labels(t, p, name).set(v)
            seen.clear()
            seen.update(r.phases)
            for s in STATUSES:
                self.check.labels(t, p, s.value).set(1 if check.status == s else 0)
            for s in STATES:
                self.target.labels(t, s.value).set(1 if target_state == s else 0)
                self.agent.labels(s.value).set(1 if agent_state == s else 0)
            if r.tls is not None:
                self.ssl_earliest.labels(t, p).set(r.tls.earliest_not_after)
                self.ssl_leaf.labels(t, p).set(r.tls.leaf_not_after)
            if p == "failover":
                active = r.detail.get("active") if r.ok else None
                for ep in FAILOVER_ENDPOINTS:
                    self.failover.labels(t, ep).set(1 if active == ep else 0)
            if out_of_range:
                self.out_of_range.labels(t, p).inc(out_of_range)

    def render(self) -> bytes:
        return generate_latest(self.registry)


__all__ = ["PrometheusExporter", "NON_ADDITIVE_PHASES"]
