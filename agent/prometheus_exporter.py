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
import threading
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from agent import __version__
from agent.evaluator import HealthState
from agent.metrics_catalogue import family
from agent.observation import (
    AgentEvent,
    ConfigLoad,
    ExportFailed,
    Maintenance,
    MissedRun,
    Observation,
    PlansInstalled,
    SelfProbeOverhead,
    StartLateness,
    TargetInfo,
    TargetSettings,
)
from agent.prometheus_series import (
    DURATION_BUCKETS,
    FAMILIES,
    HEADERS,
    LATENESS_BUCKETS,
    STATE_VALUES,
    STATUS_VALUES,
    ProbeCounters,
    WithoutCreated,
    agent_gauge,
    classic_histogram,
    num,
    tp_labels,
)
from agent.recorder import QUANTILES
from agent.slo import ProbeObjectives
from probes.base import Facts, ProbeResult, Reason


class PrometheusExporter:
    def __init__(self, shard: str = "0/1", *, classic_histogram: bool = False) -> None:
        """classic_histogram: also export pacs_probe_duration_seconds (16 buckets, _count, _sum
        per probe; agent.metrics.classicHistogram). Off, the HDR quantiles stand for it."""
        self._lock = threading.Lock()
        self._classic = classic_histogram
        # family → (target, probe) → encoded text; probe "" for per-target families. Bytes, so
        # that a scrape is one join (a str join + encode + concatenation made three 10 MB
        # copies for 1,000 targets, which glibc then kept as RSS).
        self._frag: dict[str, dict[tuple[str, str], bytes]] = {n: {} for n, _, _ in FAMILIES}
        # One key tuple per (target, probe) shared by every family's dict: each dict keeps the
        # key it was first given, and ~20 families made ~20 tuples per key (~3 KB a target).
        self._keys: dict[tuple[str, str], tuple[str, str]] = {}
        self._state: dict[tuple[str, str], ProbeCounters] = {}
        self._slos: dict[tuple[str, str], ProbeObjectives] = {}
        # target → probe → the facts it declares for a run that found nothing (TargetInfo)
        self._declared: dict[str, dict[str, Facts]] = {}
        # what pacs_target_health and pacs_agent_health show now: re-rendered only on a change
        self._shown_health: dict[str, HealthState] = {}
        self._shown_agent = HealthState.UNKNOWN
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._agent_metrics = WithoutCreated(r)
        self.agent = agent_gauge("pacs_agent_health", r)
        lateness = family("pacs_scheduler_start_lateness_seconds")
        self.lateness = Histogram(
            lateness.name, lateness.help, buckets=LATENESS_BUCKETS, registry=r
        )
        self.self_probe = agent_gauge("pacs_agent_self_probe_overhead_seconds", r)
        self.targets_gauge = agent_gauge("pacs_agent_targets", r)
        self.info = agent_gauge("pacs_agent_info", r)
        self.info.labels(__version__, shard).set(1)
        self.reload_ok = agent_gauge("pacs_config_last_reload_successful", r)
        self.reload_ts = agent_gauge("pacs_config_last_reload_success_timestamp_seconds", r)
        failures = family("pacs_otlp_export_failures_total")
        # prometheus_client appends _total to a counter's name itself
        self.otlp_failures = Counter(
            failures.name.removesuffix("_total"), failures.help, registry=r
        )
        for s, v in STATE_VALUES:
            self.agent.labels(v).set(1 if s == HealthState.UNKNOWN else 0)

    # -- fragments -------------------------------------------------------------------------------

    def _set(self, family: str, key: tuple[str, str], lines: Iterable[str]) -> None:
        text = "".join(lines)
        if text:
            self._put(family, key, text)
        else:
            self._frag[family].pop(key, None)

    def _put(self, family: str, key: tuple[str, str], text: str) -> None:
        """One fragment that is not empty."""
        frags = self._frag[family]
        if key not in frags:
            key = self._keys.setdefault(key, key)
        frags[key] = text.encode()

    def _counters(self, t: str, p: str, st: ProbeCounters) -> None:
        self._runs(t, p, st)
        self._failures(t, p, st)
        self._missed(t, p, st)
        self._oor(t, p, st)

    def _runs(self, t: str, p: str, st: ProbeCounters) -> None:
        """The two counters every result moves: runs by result, and attempts."""
        tp, runs = tp_labels(t, p), st.runs
        self._put(
            "pacs_probe_runs_total",
            (t, p),
            f'pacs_probe_runs_total{{{tp},result="success"}} {runs["success"]}.0\n'
            f'pacs_probe_runs_total{{{tp},result="failure"}} {runs["failure"]}.0\n',
        )
        name = "pacs_probe_attempts_total"
        self._put(name, (t, p), f"{name}{{{tp}}} {num(st.attempts)}\n")

    def _failures(self, t: str, p: str, st: ProbeCounters) -> None:
        tp = tp_labels(t, p)
        self._set(
            "pacs_probe_failures_total",
            (t, p),
            (
                f'pacs_probe_failures_total{{{tp},reason="{rs}"}} {num(n)}\n'
                for rs, n in sorted(st.failures.items())
            ),
        )

    def _missed(self, t: str, p: str, st: ProbeCounters) -> None:
        name = "pacs_scheduler_missed_runs_total"
        self._put(name, (t, p), f"{name}{{{tp_labels(t, p)}}} {num(st.missed)}\n")

    def _oor(self, t: str, p: str, st: ProbeCounters) -> None:
        # from the start, like the counters above: an alert on increase() needs the 0 before the 1
        name = "pacs_latency_out_of_range_total"
        self._put(name, (t, p), f"{name}{{{tp_labels(t, p)}}} {num(st.oor)}\n")

    def _slo(self, t: str, p: str, st: ProbeCounters) -> None:
        """Objectives, and the slow-run counter of a probe with a latency SLO (one series)."""
        obj = self._slos.get((t, p))
        tp = tp_labels(t, p)
        self._set(
            "pacs_slo_objective_ratio",
            (t, p),
            (
                f'pacs_slo_objective_ratio{{{tp},slo="{slo}"}} {num(ratio)}\n'
                for slo, ratio in (obj.ratios().items() if obj else ())
            ),
        )
        has_latency = obj is not None and obj.latency_threshold is not None
        self._set(
            "pacs_probe_slow_runs_total",
            (t, p),
            (f"pacs_probe_slow_runs_total{{{tp}}} {num(st.slow)}\n",) if has_latency else (),
        )

    # -- per target ------------------------------------------------------------------------------

    def add_target(self, target: TargetInfo) -> None:
        """Create the series a target has from the start, so absent() and rate() work at once."""
        if not target.metrics_enabled:
            return
        tid = target.id
        with self._lock:
            self._declared[tid] = dict(target.declared)
            for p in target.probes:
                if p in target.slos:
                    self._slos[(tid, p)] = target.slos[p]
                else:
                    self._slos.pop((tid, p), None)
            self._target_health(tid, HealthState.UNKNOWN)
            for p in target.probes:
                st = self._state.setdefault((tid, p), ProbeCounters(self._classic))
                self._counters(tid, p, st)
                self._slo(tid, p, st)
            self._target_settings(target)

    def remove_target(self, target: str) -> None:
        with self._lock:
            for key in [k for k in self._state if k[0] == target]:
                del self._state[key]
            for key in [k for k in self._slos if k[0] == target]:
                del self._slos[key]
            self._declared.pop(target, None)
            self._shown_health.pop(target, None)
            for frags in self._frag.values():
                for key in [k for k in frags if k[0] == target]:
                    del frags[key]
            for key in [k for k in self._keys if k[0] == target]:
                del self._keys[key]

    def _target_settings(self, target: TargetInfo) -> None:
        """Per-target thresholds, so alert rules compare against each target's own settings."""
        tid = target.id
        t = f'{{target="{tid}"}}'
        self._set(
            "pacs_target_degraded_latency_seconds",
            (tid, ""),
            (f"pacs_target_degraded_latency_seconds{t} {num(float(target.degraded_latency))}\n",),
        )
        self._set(
            "pacs_target_cert_expiry_warning_seconds",
            (tid, ""),
            (
                f"pacs_target_cert_expiry_warning_seconds{t} "
                f"{num(float(target.cert_warning_seconds))}\n",
            ),
        )

    def event(self, ev: AgentEvent) -> None:
        if isinstance(ev, MissedRun):
            self._missed_run(ev.target, ev.probe)
        elif isinstance(ev, StartLateness):
            self.lateness.observe(ev.seconds)
        elif isinstance(ev, Maintenance):
            self._set_maintenance(ev.active)
        elif isinstance(ev, TargetSettings):
            with self._lock:
                if (ev.target.id, "") in self._frag["pacs_target_health"]:
                    self._target_settings(ev.target)
        elif isinstance(ev, PlansInstalled):
            self.targets_gauge.set(ev.targets)
        elif isinstance(ev, ConfigLoad):
            self.reload_ok.set(1 if ev.ok else 0)
            if ev.at is not None:
                self.reload_ts.set(ev.at)
        elif isinstance(ev, SelfProbeOverhead):
            self.self_probe.set(ev.seconds)
        elif isinstance(ev, ExportFailed):
            self.otlp_failures.inc()

    def _set_maintenance(self, active: Mapping[str, bool]) -> None:
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

    def _missed_run(self, target: str, probe: str) -> None:
        with self._lock:
            st = self._state.get((target, probe))
            if st is not None:
                st.missed += 1
                self._missed(target, probe, st)

    def _target_health(self, t: str, state: HealthState) -> None:
        self._shown_health[t] = state
        self._put(
            "pacs_target_health",
            (t, ""),
            "".join(
                f'pacs_target_health{{target="{t}",state="{v}"}} {1.0 if state == s else 0.0}\n'
                for s, v in STATE_VALUES
            ),
        )

    def observe(self, obs: Observation) -> None:
        """Only the fragments this result changed are rendered again: most runs move the run
        and attempt counters, the duration, the timestamp, the latency window and the phases,
        and leave success, check status, target and agent health, and the failure counters as
        they were (rendering every fragment on every result was ~10 % of the agent's CPU)."""
        r, ev = obs.result, obs.evaluation
        quantiles = obs.recorded.quantiles
        t, p = r.target, r.probe
        key = (t, p)
        with self._lock:
            st = self._state.get(key)
            if st is None:
                return  # metrics disabled for it, or removed by a reload during this run
            tp = tp_labels(t, p)
            ok = r.ok
            st.runs["success" if ok else "failure"] += 1
            st.attempts += r.attempts
            self._runs(t, p, st)
            if obs.recorded.out_of_range:
                st.oor += obs.recorded.out_of_range
                self._oor(t, p, st)
            if ok:
                if self._classic:
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
                self._failures(t, p, st)
                dicom_status = r.facts.dicom_status
                if dicom_status:
                    st.dicom_status[dicom_status] = st.dicom_status.get(dicom_status, 0) + 1
                    self._set(
                        "pacs_probe_dicom_status_total",
                        key,
                        (
                            f'pacs_probe_dicom_status_total{{{tp},status="{sv}"}} {num(n)}\n'
                            for sv, n in sorted(st.dicom_status.items())
                        ),
                    )
            obj = self._slos.get(key)
            if obj is not None and obj.is_slow(ok, r.duration):
                st.slow += 1
                self._slo(t, p, st)
            if st.shown_ok is not ok:
                st.shown_ok = ok
                self._put("probe_success", key, f"probe_success{{{tp}}} {1.0 if ok else 0.0}\n")
            self._put(
                "probe_duration_seconds", key, f"probe_duration_seconds{{{tp}}} {num(r.duration)}\n"
            )
            self._put(
                "pacs_probe_last_run_timestamp_seconds",
                key,
                f"pacs_probe_last_run_timestamp_seconds{{{tp}}} {num(r.started_at.timestamp())}\n",
            )
            if st.count:
                self._set("pacs_probe_duration_seconds", key, classic_histogram(tp, st))
            lat = [
                f'pacs_probe_latency_seconds{{{tp},quantile="{q}"}} {num(quantiles[q])}\n'
                for q in QUANTILES
                if q in quantiles
            ]
            if lat or st.lat_count:
                lat.append(f"pacs_probe_latency_seconds_count{{{tp}}} {num(st.lat_count)}\n")
                lat.append(f"pacs_probe_latency_seconds_sum{{{tp}}} {num(st.lat_sum)}\n")
            self._set("pacs_probe_latency_seconds", key, lat)
            # phases this run did not reach are dropped, not left stale
            self._set(
                "pacs_probe_phase_duration_seconds",
                key,
                [
                    f'pacs_probe_phase_duration_seconds{{{tp},phase="{ph}"}} {num(v)}\n'
                    for ph, v in r.phases.items()
                ],
            )
            status = ev.check.status
            if st.shown_status is not status:
                st.shown_status = status
                self._put(
                    "pacs_check_status",
                    key,
                    "".join(
                        f'pacs_check_status{{{tp},status="{v}"}} {1.0 if status == s else 0.0}\n'
                        for s, v in STATUS_VALUES
                    ),
                )
            if self._shown_health.get(t) is not ev.target_after:
                self._target_health(t, ev.target_after)
            if (tls := r.tls) is not None:
                put = self._put
                put("probe_ssl_earliest_cert_expiry", key,
                    f"probe_ssl_earliest_cert_expiry{{{tp}}} {num(tls.earliest_not_after)}\n")
                name = "pacs_tls_cert_not_after_timestamp_seconds"
                put(name, key, f"{name}{{{tp}}} {num(tls.leaf_not_after)}\n")
                if tls.version is not None:
                    put("probe_tls_version_info", key,
                        f'probe_tls_version_info{{{tp},version="{tls.version}"}} 1.0\n')
            declared, f = self._declared.get(t, {}).get(p), r.facts
            if declared is not None or f.endpoints_up is not None or f.contexts is not None:
                self._declared_series(r, declared)
            # results reach the exporters one at a time (the service's plans lock), so the
            # last agent state seen here is the one the gauge shows
            agent_state = ev.agent_state
            if agent_state is not self._shown_agent:
                self._shown_agent = agent_state
                for s, v in STATE_VALUES:
                    self.agent.labels(v).set(1 if agent_state == s else 0)

    def _declared_series(self, r: ProbeResult, declared: Facts | None) -> None:
        """Series of the facts that name their own label values (failover nodes, proposed
        contexts), for any probe reporting or declaring them. A run that failed reports none:
        its series come from what the probe declared (every node down, every context refused)."""
        t = r.target
        f = r.facts
        up = f.endpoints_up
        if up is None and declared is not None:
            up = declared.endpoints_up
        if up is not None:
            active = f.active_endpoint if r.ok else None
            # every configured node gets a series, so a third node serving reads 1 too
            self._set(
                "pacs_failover_active",
                (t, ""),
                (
                    f'pacs_failover_active{{target="{t}",endpoint="{ep}"}} '
                    f"{1.0 if active == ep else 0.0}\n"
                    for ep in up
                ),
            )
            self._set(
                "pacs_failover_endpoint_up",
                (t, ""),
                (
                    f'pacs_failover_endpoint_up{{target="{t}",endpoint="{ep}"}} '
                    f"{1.0 if r.ok and ok else 0.0}\n"
                    for ep, ok in up.items()
                ),
            )
        contexts = f.contexts
        if contexts is None and declared is not None:
            contexts = declared.contexts
        if contexts is not None:
            # one series per configured (SOP class, transfer syntax) pair: bounded by config
            self._set(
                "pacs_dicom_context_accepted",
                (t, r.probe),
                (
                    f'pacs_dicom_context_accepted{{target="{t}",sop_class="{sop}",'
                    f'transfer_syntax="{ts}"}} {1.0 if ok else 0.0}\n'
                    for sop, ts, ok in contexts
                ),
            )

    def render_parts(self) -> list[bytes]:
        """The exposition as the cached fragments in order, for agent.http_body to join (or,
        past ~7,000 targets, to compress batch by batch without joining them first)."""
        with self._lock:
            parts: list[bytes] = []
            for name, _, _ in FAMILIES:
                frags = self._frag[name]
                if frags:
                    parts.append(HEADERS[name])
                    parts.extend(frags.values())
        parts.append(generate_latest(self._agent_metrics))
        return parts

    def render(self) -> bytes:
        return b"".join(self.render_parts())
