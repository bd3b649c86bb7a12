"""Prometheus exporter: values are set when a result arrives, so a scrape only concatenates text.

Names and labels are the contract in docs/metrics.md.

Per-target series are kept as pre-rendered text fragments, one per (family, target, probe),
rewritten when that probe reports. prometheus_client's generic renderer formats every sample on
every scrape (~20 µs a line): 1,000 targets are ~110k lines, over 2 s per scrape on this machine.
Here a scrape joins cached strings. Agent-level metrics (a handful of series) stay in
prometheus_client. Label values need no escaping: target ids are validated to [A-Za-z0-9_.:-],
and probe, phase, reason, status and state come from fixed sets.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest

from agent import __version__
from agent.evaluator import CheckState, CheckStatus, HealthState
from agent.recorder import QUANTILES
from agent.slo import ProbeObjectives
from probes.base import ProbeResult, Reason

# `_created` series double every counter and histogram for no use here.
disable_created_metrics()

# 2 s is the guide's degradedLatency default: alerts can count runs on each side of it.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2,
    2.5,
    5,
    10,
    30,
    60,
)
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# UNKNOWN: no result yet. Exported as a state of its own, so a target that has not reported
# reads 1 there instead of 0 everywhere (which dashboards painted green).
STATES = (HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY, HealthState.UNKNOWN)
STATUSES = (CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL)
# Endpoints a failover target exports before its first successful run says which it has; after
# that, the probe's own node names (primary, secondary, secondary2, ... as configured).
FAILOVER_ENDPOINTS = ("primary", "secondary")

# (name, type, help) of the per-target families, in exposition order.
FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("probe_success", "gauge", "1 if the last run succeeded"),
    ("probe_duration_seconds", "gauge", "Wall time of the last run on the wire"),
    ("pacs_probe_last_run_timestamp_seconds", "gauge", "Unix time the last run started"),
    ("pacs_probe_duration_seconds", "histogram", "Successful runs' durations"),
    (
        "pacs_probe_latency_seconds",
        "summary",
        "HDR quantiles of successful runs over the sliding window",
    ),
    ("pacs_probe_phase_duration_seconds", "gauge", "Last run, per phase"),
    ("pacs_probe_runs_total", "counter", "Runs by result"),
    ("pacs_probe_failures_total", "counter", "Failed runs by reason"),
    ("pacs_probe_attempts_total", "counter", "Attempts including retries"),
    ("pacs_check_status", "gauge", "1 for the check's current status"),
    ("pacs_target_health", "gauge", "1 for the target's current state"),
    ("pacs_failover_active", "gauge", "1 for the endpoint currently serving"),
    ("pacs_failover_endpoint_up", "gauge", "1 if the failover endpoint answered in the last run"),
    ("pacs_probe_dicom_status_total", "counter", "Failed runs by DICOM status or rejection"),
    (
        "pacs_dicom_context_accepted",
        "gauge",
        "1 if the PACS accepted the SOP class with the transfer syntax",
    ),
    ("probe_ssl_earliest_cert_expiry", "gauge", "Earliest certificate expiry (unix time)"),
    ("pacs_tls_cert_not_after_timestamp_seconds", "gauge", "Leaf certificate expiry (unix time)"),
    ("probe_tls_version_info", "gauge", "TLS version the last handshake negotiated"),
    ("pacs_latency_out_of_range_total", "counter", "Latencies outside the HDR range, clamped"),
    ("pacs_scheduler_missed_runs_total", "counter", "Scheduled runs missed or skipped"),
    ("pacs_slo_objective_ratio", "gauge", "Service-level objective (0.999 for 99.9 %)"),
    ("pacs_probe_slow_runs_total", "counter", "Successful runs over the latency SLO threshold"),
    ("pacs_target_maintenance", "gauge", "1 while the target is in a maintenance window"),
    (
        "pacs_target_degraded_latency_seconds",
        "gauge",
        "The target's degradedLatency (p95 above it is DEGRADED)",
    ),
    (
        "pacs_target_cert_expiry_warning_seconds",
        "gauge",
        "The target's certExpiryWarningDays in seconds",
    ),
)
_HEADERS = {
    name: f"# HELP {name} {doc}\n# TYPE {name} {kind}\n".encode() for name, kind, doc in FAMILIES
}


def _v(x: float) -> str:
    if isinstance(x, int):
        return f"{x}.0" if abs(x) < 1e16 else repr(float(x))
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


class _ProbeState:
    """Everything exported about one (target, probe)."""

    __slots__ = (
        "buckets",
        "count",
        "sum",
        "runs",
        "failures",
        "attempts",
        "missed",
        "oor",
        "lat_count",
        "lat_sum",
        "slow",
        "dicom_status",
    )

    def __init__(self) -> None:
        self.buckets = [0] * len(DURATION_BUCKETS)
        self.count = 0
        self.sum = 0.0
        self.runs = {"success": 0, "failure": 0}
        self.failures: dict[str, int] = {}
        self.attempts = 0
        self.missed = 0
        self.oor = 0
        self.lat_count = 0
        self.lat_sum = 0.0
        self.slow = 0
        self.dicom_status: dict[str, int] = {}  # bounded labels (probes.dicom_status)


class PrometheusExporter:
    def __init__(self, shard: str = "0/1") -> None:
        self._lock = threading.Lock()
        # family → (target, probe) → encoded text; probe "" for per-target families. Bytes, so
        # that a scrape is one join (a str join + encode + concatenation made three 10 MB
        # copies for 1,000 targets, which glibc then kept as RSS).
        self._frag: dict[str, dict[tuple[str, str], bytes]] = {n: {} for n, _, _ in FAMILIES}
        self._state: dict[tuple[str, str], _ProbeState] = {}
        self._slos: dict[tuple[str, str], ProbeObjectives] = {}
        self._failover_eps: dict[str, tuple[str, ...]] = {}  # target → its failover node names
        # (target, probe) → the last (sop_class, transfer_syntax, accepted) of dicom_capabilities
        self._contexts: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.agent = Gauge(
            "pacs_agent_health", "1 for the worst target state", ["state"], registry=r
        )
        self.lateness = Histogram(
            "pacs_scheduler_start_lateness_seconds",
            "Actual minus scheduled start time",
            buckets=LATENESS_BUCKETS,
            registry=r,
        )
        self.self_probe = Gauge(
            "pacs_agent_self_probe_overhead_seconds",
            "Reported duration of a C-ECHO to the agent's own in-process loopback SCP",
            registry=r,
        )
        self.targets_gauge = Gauge("pacs_agent_targets", "Targets this agent probes", registry=r)
        self.info = Gauge(
            "pacs_agent_info", "Agent version and shard", ["version", "shard"], registry=r
        )
        self.info.labels(__version__, shard).set(1)
        self.reload_ok = Gauge(
            "pacs_config_last_reload_successful", "1 if the last config load succeeded", registry=r
        )
        self.reload_ts = Gauge(
            "pacs_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load",
            registry=r,
        )
        self.otlp_failures = Counter(
            "pacs_otlp_export_failures", "OTLP export attempts that failed", registry=r
        )
        for s in STATES:
            self.agent.labels(s.value).set(1 if s == HealthState.UNKNOWN else 0)

    # -- fragments -------------------------------------------------------------------------------

    def _set(self, family: str, key: tuple[str, str], lines: Iterable[str]) -> None:
        text = "".join(lines)
        if text:
            self._frag[family][key] = text.encode()
        else:
            self._frag[family].pop(key, None)

    def _counters(self, t: str, p: str, st: _ProbeState) -> None:
        tp = f'target="{t}",probe="{p}"'
        self._set(
            "pacs_probe_runs_total",
            (t, p),
            (
                f'pacs_probe_runs_total{{{tp},result="{res}"}} {_v(n)}\n'
                for res, n in st.runs.items()
            ),
        )
        self._set(
            "pacs_probe_failures_total",
            (t, p),
            (
                f'pacs_probe_failures_total{{{tp},reason="{rs}"}} {_v(n)}\n'
                for rs, n in sorted(st.failures.items())
            ),
        )
        self._set(
            "pacs_probe_attempts_total",
            (t, p),
            (f"pacs_probe_attempts_total{{{tp}}} {_v(st.attempts)}\n",),
        )
        self._set(
            "pacs_scheduler_missed_runs_total",
            (t, p),
            (f"pacs_scheduler_missed_runs_total{{{tp}}} {_v(st.missed)}\n",),
        )
        # from the start, like the counters above: an alert on increase() needs the 0 before the 1
        self._set(
            "pacs_latency_out_of_range_total",
            (t, p),
            (f"pacs_latency_out_of_range_total{{{tp}}} {_v(st.oor)}\n",),
        )

    def _slo(self, t: str, p: str, st: _ProbeState) -> None:
        """Objectives, and the slow-run counter of a probe with a latency SLO (one series)."""
        obj = self._slos.get((t, p))
        tp = f'target="{t}",probe="{p}"'
        self._set(
            "pacs_slo_objective_ratio",
            (t, p),
            (
                f'pacs_slo_objective_ratio{{{tp},slo="{slo}"}} {_v(ratio)}\n'
                for slo, ratio in (obj.ratios().items() if obj else ())
            ),
        )
        has_latency = obj is not None and obj.latency_threshold is not None
        self._set(
            "pacs_probe_slow_runs_total",
            (t, p),
            (f"pacs_probe_slow_runs_total{{{tp}}} {_v(st.slow)}\n",) if has_latency else (),
        )

    # -- per target ------------------------------------------------------------------------------

    def add_target(
        self,
        target: str,
        probes: list[str],
        slos: Mapping[str, ProbeObjectives] | None = None,
    ) -> None:
        """Create the series a target has from the start, so absent() and rate() work at once."""
        with self._lock:
            for p in probes:
                if slos and p in slos:
                    self._slos[(target, p)] = slos[p]
                else:
                    self._slos.pop((target, p), None)
            self._set(
                "pacs_target_health",
                (target, ""),
                (
                    f'pacs_target_health{{target="{target}",state="{s.value}"}} '
                    f"{1.0 if s == HealthState.UNKNOWN else 0.0}\n"
                    for s in STATES
                ),
            )
            for p in probes:
                st = self._state.setdefault((target, p), _ProbeState())
                self._counters(target, p, st)
                self._slo(target, p, st)

    def remove_target(self, target: str) -> None:
        with self._lock:
            for key in [k for k in self._state if k[0] == target]:
                del self._state[key]
            for key in [k for k in self._slos if k[0] == target]:
                del self._slos[key]
            self._failover_eps.pop(target, None)
            for key in [k for k in self._contexts if k[0] == target]:
                del self._contexts[key]
            for frags in self._frag.values():
                for key in [k for k in frags if k[0] == target]:
                    del frags[key]

    def set_target_settings(
        self, target: str, degraded_latency: float, cert_warning_seconds: float
    ) -> None:
        """Per-target thresholds, so alert rules compare against each target's own settings."""
        t = f'{{target="{target}"}}'
        with self._lock:
            self._set(
                "pacs_target_degraded_latency_seconds",
                (target, ""),
                (f"pacs_target_degraded_latency_seconds{t} {_v(float(degraded_latency))}\n",),
            )
            self._set(
                "pacs_target_cert_expiry_warning_seconds",
                (target, ""),
                (
                    f"pacs_target_cert_expiry_warning_seconds{t} "
                    f"{_v(float(cert_warning_seconds))}\n",
                ),
            )

    def set_maintenance(self, active: dict[str, bool]) -> None:
        """pacs_target_maintenance for the given targets (only those already added)."""
        with self._lock:
            health = self._frag["pacs_target_health"]
            current = self._frag["pacs_target_maintenance"]
            for target, on in active.items():
                if (target, "") not in health:
                    continue  # removed, or metrics disabled for it
                if current.get((target, ""), b"").endswith(b" 1.0\n" if on else b" 0.0\n"):
                    continue  # unchanged: every scrape refreshes, few windows ever change
                self._set(
                    "pacs_target_maintenance",
                    (target, ""),
                    (f'pacs_target_maintenance{{target="{target}"}} {1.0 if on else 0.0}\n',),
                )

    def missed_run(self, target: str, probe: str) -> None:
        with self._lock:
            st = self._state.get((target, probe))
            if st is not None:
                st.missed += 1
                self._counters(target, probe, st)

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
        tp = f'target="{t}",probe="{p}"'
        key = (t, p)
        with self._lock:
            st = self._state.setdefault(key, _ProbeState())
            st.runs["success" if r.ok else "failure"] += 1
            st.attempts += r.attempts
            st.oor += out_of_range
            if r.ok:
                i = bisect.bisect_left(DURATION_BUCKETS, r.duration)
                for j in range(i, len(st.buckets)):
                    st.buckets[j] += 1
                st.count += 1
                st.sum += r.duration
                st.lat_count += 1
                st.lat_sum += r.duration
            else:
                reason = (r.reason or Reason.ERROR).value
                st.failures[reason] = st.failures.get(reason, 0) + 1
                dicom_status = r.facts.dicom_status
                if dicom_status:
                    st.dicom_status[dicom_status] = st.dicom_status.get(dicom_status, 0) + 1
                    self._set(
                        "pacs_probe_dicom_status_total",
                        key,
                        (
                            f'pacs_probe_dicom_status_total{{{tp},status="{sv}"}} {_v(n)}\n'
                            for sv, n in sorted(st.dicom_status.items())
                        ),
                    )
            self._counters(t, p, st)
            obj = self._slos.get(key)
            if obj is not None and obj.is_slow(r.ok, r.duration):
                st.slow += 1
                self._slo(t, p, st)
            self._set("probe_success", key, (f"probe_success{{{tp}}} {1.0 if r.ok else 0.0}\n",))
            self._set(
                "probe_duration_seconds",
                key,
                (f"probe_duration_seconds{{{tp}}} {_v(r.duration)}\n",),
            )
            self._set(
                "pacs_probe_last_run_timestamp_seconds",
                key,
                (
                    f"pacs_probe_last_run_timestamp_seconds{{{tp}}} "
                    f"{_v(r.started_at.timestamp())}\n",
                ),
            )
            if st.count:
                hist = [
                    f'pacs_probe_duration_seconds_bucket{{{tp},le="{_v(float(le))}"}} {_v(n)}\n'
                    for le, n in zip(DURATION_BUCKETS, st.buckets, strict=True)
                ]
                hist.append(
                    f'pacs_probe_duration_seconds_bucket{{{tp},le="+Inf"}} {_v(st.count)}\n'
                )
                hist.append(f"pacs_probe_duration_seconds_count{{{tp}}} {_v(st.count)}\n")
                hist.append(f"pacs_probe_duration_seconds_sum{{{tp}}} {_v(st.sum)}\n")
                self._set("pacs_probe_duration_seconds", key, hist)
            lat = [
                f'pacs_probe_latency_seconds{{{tp},quantile="{q}"}} {_v(quantiles[q])}\n'
                for q in QUANTILES
                if q in quantiles
            ]
            if lat or st.lat_count:
                lat.append(f"pacs_probe_latency_seconds_count{{{tp}}} {_v(st.lat_count)}\n")
                lat.append(f"pacs_probe_latency_seconds_sum{{{tp}}} {_v(st.lat_sum)}\n")
            self._set("pacs_probe_latency_seconds", key, lat)
            # phases this run did not reach are dropped, not left stale
            self._set(
                "pacs_probe_phase_duration_seconds",
                key,
                (
                    f'pacs_probe_phase_duration_seconds{{{tp},phase="{ph}"}} {_v(v)}\n'
                    for ph, v in r.phases.items()
                ),
            )
            self._set(
                "pacs_check_status",
                key,
                (
                    f'pacs_check_status{{{tp},status="{s.value}"}} '
                    f"{1.0 if check.status == s else 0.0}\n"
                    for s in STATUSES
                ),
            )
            self._set(
                "pacs_target_health",
                (t, ""),
                (
                    f'pacs_target_health{{target="{t}",state="{s.value}"}} '
                    f"{1.0 if target_state == s else 0.0}\n"
                    for s in STATES
                ),
            )
            if r.tls is not None:
                self._set(
                    "probe_ssl_earliest_cert_expiry",
                    key,
                    (f"probe_ssl_earliest_cert_expiry{{{tp}}} {_v(r.tls.earliest_not_after)}\n",),
                )
                self._set(
                    "pacs_tls_cert_not_after_timestamp_seconds",
                    key,
                    (
                        f"pacs_tls_cert_not_after_timestamp_seconds{{{tp}}} "
                        f"{_v(r.tls.leaf_not_after)}\n",
                    ),
                )
                if r.tls.version is not None:
                    self._set(
                        "probe_tls_version_info",
                        key,
                        (f'probe_tls_version_info{{{tp},version="{r.tls.version}"}} 1.0\n',),
                    )
            if p == "failover":
                active = r.facts.active_endpoint if r.ok else None
                # every configured node gets a series, so a third node serving reads 1 too
                up = r.facts.endpoints_up
                eps = tuple(up) if up else self._failover_eps.get(t, FAILOVER_ENDPOINTS)
                self._failover_eps[t] = eps
                self._set(
                    "pacs_failover_active",
                    (t, ""),
                    (
                        f'pacs_failover_active{{target="{t}",endpoint="{ep}"}} '
                        f"{1.0 if active == ep else 0.0}\n"
                        for ep in eps
                    ),
                )
                # a run that failed has every node down (it raised before reporting `up`)
                self._set(
                    "pacs_failover_endpoint_up",
                    (t, ""),
                    (
                        f'pacs_failover_endpoint_up{{target="{t}",endpoint="{ep}"}} '
                        f"{1.0 if r.ok and up and up.get(ep) else 0.0}\n"
                        for ep in eps
                    ),
                )
            if p == "dicom_capabilities":
                contexts = r.facts.contexts
                if contexts is None:  # a failed run: nothing was accepted
                    contexts = tuple((sop, ts, False) for sop, ts, _ in self._contexts.get(key, ()))
                self._contexts[key] = list(contexts)
                # one series per configured (SOP class, transfer syntax) pair: bounded by config
                self._set(
                    "pacs_dicom_context_accepted",
                    key,
                    (
                        f'pacs_dicom_context_accepted{{target="{t}",sop_class="{sop}",'
                        f'transfer_syntax="{ts}"}} {1.0 if ok else 0.0}\n'
                        for sop, ts, ok in contexts
                    ),
                )
        for s in STATES:
            self.agent.labels(s.value).set(1 if agent_state == s else 0)

    def render(self) -> bytes:
        with self._lock:
            parts: list[bytes] = []
            for name, _, _ in FAMILIES:
                frags = self._frag[name]
                if frags:
                    parts.append(_HEADERS[name])
                    parts.extend(frags.values())
        parts.append(generate_latest(self.registry))
        return b"".join(parts)
