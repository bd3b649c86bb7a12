"""Prometheus exporter: values are set when a result arrives, so a scrape only concatenates text.

Names and labels are the contract in docs/metrics.md.

Per-target series are kept as pre-rendered text fragments, one per (family, target, probe),
rewritten when that probe reports. Each (target, probe), and each target for its own series,
has a slot: an index into one list per family, so that 5,000 targets × ~36 fragments cost a
pointer each rather than a dict entry each (~1 KB a target less).

prometheus_client's generic renderer formats every sample on every scrape (~20 µs a line):
1,000 targets are ~110k lines, over 2 s per scrape on this machine. Here a scrape joins cached
strings. Agent-level metrics (a handful of series) stay in prometheus_client. Label values need
no escaping: target ids are validated to [A-Za-z0-9_.:-], and probe, phase, reason, status and
state come from fixed sets.
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
        # family → slot → encoded text or None. Bytes, so that a scrape is one join (a str
        # join + encode + concatenation made three 10 MB copies for 1,000 targets, which glibc
        # then kept as RSS).
        self._frag: dict[str, list[bytes | None]] = {n: [] for n, _, _ in FAMILIES}
        # (target, probe) → slot; (target, "") for the per-target families. A removed
        # target's slots are reused by the next one added.
        self._slots: dict[tuple[str, str], int] = {}
        self._free: list[int] = []
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

    def _slot(self, key: tuple[str, str]) -> int:
        """The slot of (target, probe) or (target, ""), taken on first use."""
        slot = self._slots.get(key)
        if slot is None:
            if self._free:
                slot = self._free.pop()
            else:
                slot = len(self._frag["pacs_target_health"])
                for frags in self._frag.values():
                    frags.append(None)
            self._slots[key] = slot
        return slot

    def _shown(self, family: str, target: str) -> bytes | None:
        """A per-target family's fragment of `target`, if the target has been added."""
        slot = self._slots.get((target, ""))
        return None if slot is None else self._frag[family][slot]

    def _set(self, family: str, slot: int, lines: Iterable[str]) -> None:
        text = "".join(lines)
        self._frag[family][slot] = text.encode() if text else None

    def _put(self, family: str, slot: int, text: str) -> None:
        """One fragment that is not empty."""
        self._frag[family][slot] = text.encode()

    def _counters(self, t: str, p: str, st: ProbeCounters) -> None:
        self._runs(t, p, st)
        self._failures(t, p, st)
        self._missed(t, p, st)
        self._oor(t, p, st)

    def _runs(self, t: str, p: str, st: ProbeCounters) -> None:
        """The two counters every result moves: runs by result, and attempts."""
        tp = tp_labels(t, p)
        self._put(
            "pacs_probe_runs_total",
            st.slot,
            f'pacs_probe_runs_total{{{tp},result="success"}} {st.success}.0\n'
            f'pacs_probe_runs_total{{{tp},result="failure"}} {st.failure}.0\n',
        )
        name = "pacs_probe_attempts_total"
        self._put(name, st.slot, f"{name}{{{tp}}} {num(st.attempts)}\n")

    def _failures(self, t: str, p: str, st: ProbeCounters) -> None:
        tp = tp_labels(t, p)
        self._set(
            "pacs_probe_failures_total",
            st.slot,
            (
                f'pacs_probe_failures_total{{{tp},reason="{rs}"}} {num(n)}\n'
                for rs, n in sorted((st.failures or {}).items())
            ),
        )

    def _missed(self, t: str, p: str, st: ProbeCounters) -> None:
        name = "pacs_scheduler_missed_runs_total"
        self._put(name, st.slot, f"{name}{{{tp_labels(t, p)}}} {num(st.missed)}\n")

    def _oor(self, t: str, p: str, st: ProbeCounters) -> None:
        # from the start, like the counters above: an alert on increase() needs the 0 before the 1
        name = "pacs_latency_out_of_range_total"
        self._put(name, st.slot, f"{name}{{{tp_labels(t, p)}}} {num(st.oor)}\n")

    def _slo(self, t: str, p: str, st: ProbeCounters) -> None:
        """Objectives, and the slow-run counter of a probe with a latency SLO (one series)."""
        obj = self._slos.get((t, p))
        tp = tp_labels(t, p)
        self._set(
            "pacs_slo_objective_ratio",
            st.slot,
            (
                f'pacs_slo_objective_ratio{{{tp},slo="{slo}"}} {num(ratio)}\n'
                for slo, ratio in (obj.ratios().items() if obj else ())
            ),
        )
        has_latency = obj is not None and obj.latency_threshold is not None
        self._set(
            "pacs_probe_slow_runs_total",
            st.slot,
            (f"pacs_probe_slow_runs_total{{{tp}}} {num(st.slow)}\n",) if has_latency else (),
        )

    # -- per target ------------------------------------------------------------------------------

    def add_target(self, target: TargetInfo) -> None:
        """Create the series a target has from the start, so absent() and rate() work at once."""
        if not target.metrics_enabled:
            return
        tid = target.id
        with self._lock:
            if target.declared:  # most targets declare nothing: no empty dict for each
                self._declared[tid] = dict(target.declared)
            else:
                self._declared.pop(tid, None)
            for p in target.probes:
                if p in target.slos:
                    self._slos[(tid, p)] = target.slos[p]
                else:
                    self._slos.pop((tid, p), None)
            self._target_health(tid, HealthState.UNKNOWN)
            for p in target.probes:
                st = self._state.get((tid, p))
                if st is None:
                    st = ProbeCounters(self._slot((tid, p)), self._classic)
                    self._state[(tid, p)] = st
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
            for key in [k for k in self._slots if k[0] == target]:
                slot = self._slots.pop(key)
                for frags in self._frag.values():
                    frags[slot] = None
                self._free.append(slot)

    def _target_settings(self, target: TargetInfo) -> None:
        """Per-target thresholds, so alert rules compare against each target's own settings."""
        tid = target.id
        t = f'{{target="{tid}"}}'
        slot = self._slot((tid, ""))
        self._set(
            "pacs_target_degraded_latency_seconds",
            slot,
            (f"pacs_target_degraded_latency_seconds{t} {num(float(target.degraded_latency))}\n",),
        )
        self._set(
            "pacs_target_cert_expiry_warning_seconds",
            slot,
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
                if self._shown("pacs_target_health", ev.target.id) is not None:
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
                slot = self._slots.get((target, ""))
                if slot is None or health[slot] is None:
                    continue  # removed, or metrics disabled for it
                if (current[slot] or b"").endswith(b" 1.0\n" if on else b" 0.0\n"):
                    continue  # unchanged: every scrape refreshes, few windows ever change
                self._set(
                    "pacs_target_maintenance",
                    slot,
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
            self._slot((t, "")),
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
            slot = st.slot
            ok = r.ok
            if ok:
                st.success += 1
            else:
                st.failure += 1
            st.attempts += r.attempts
            self._runs(t, p, st)
            if obs.recorded.out_of_range:
                st.oor += obs.recorded.out_of_range
                self._oor(t, p, st)
            if ok:
                if (buckets := st.buckets) is not None:
                    i = bisect.bisect_left(DURATION_BUCKETS, r.duration)
                    for j in range(i, len(buckets)):
                        buckets[j] += 1
                    st.count += 1
                    st.sum += r.duration
                st.lat_count += 1
                st.lat_sum += r.duration
            else:
                reason = (r.reason or Reason.ERROR).value
                if st.failures is None:
                    st.failures = {}
                st.failures[reason] = st.failures.get(reason, 0) + 1
                self._failures(t, p, st)
                dicom_status = r.facts.dicom_status
                if dicom_status:
                    if st.dicom_status is None:
                        st.dicom_status = {}
                    statuses = st.dicom_status
                    statuses[dicom_status] = statuses.get(dicom_status, 0) + 1
                    self._set(
                        "pacs_probe_dicom_status_total",
                        slot,
                        (
                            f'pacs_probe_dicom_status_total{{{tp},status="{sv}"}} {num(n)}\n'
                            for sv, n in sorted(statuses.items())
                        ),
                    )
            obj = self._slos.get(key)
            if obj is not None and obj.is_slow(ok, r.duration):
                st.slow += 1
                self._slo(t, p, st)
            if st.shown_ok is not ok:
                st.shown_ok = ok
                self._put("probe_success", slot, f"probe_success{{{tp}}} {1.0 if ok else 0.0}\n")
            name = "probe_duration_seconds"
            self._put(name, slot, f"{name}{{{tp}}} {num(r.duration)}\n")
            self._put(
                "pacs_probe_last_run_timestamp_seconds",
                slot,
                f"pacs_probe_last_run_timestamp_seconds{{{tp}}} {num(r.started_at.timestamp())}\n",
            )
            if st.count:
                self._set("pacs_probe_duration_seconds", slot, classic_histogram(tp, st))
            lat = [
                f'pacs_probe_latency_seconds{{{tp},quantile="{q}"}} {num(quantiles[q])}\n'
                for q in QUANTILES
                if q in quantiles
            ]
            if lat or st.lat_count:
                lat.append(f"pacs_probe_latency_seconds_count{{{tp}}} {num(st.lat_count)}\n")
                lat.append(f"pacs_probe_latency_seconds_sum{{{tp}}} {num(st.lat_sum)}\n")
            self._set("pacs_probe_latency_seconds", slot, lat)
            # phases this run did not reach are dropped, not left stale
            self._set(
                "pacs_probe_phase_duration_seconds",
                slot,
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
                    slot,
                    "".join(
                        f'pacs_check_status{{{tp},status="{v}"}} {1.0 if status == s else 0.0}\n'
                        for s, v in STATUS_VALUES
                    ),
                )
            if self._shown_health.get(t) is not ev.target_after:
                self._target_health(t, ev.target_after)
            if (tls := r.tls) is not None:
                put = self._put
                put("probe_ssl_earliest_cert_expiry", slot,
                    f"probe_ssl_earliest_cert_expiry{{{tp}}} {num(tls.earliest_not_after)}\n")
                name = "pacs_tls_cert_not_after_timestamp_seconds"
                put(name, slot, f"{name}{{{tp}}} {num(tls.leaf_not_after)}\n")
                if tls.version is not None:
                    put("probe_tls_version_info", slot,
                        f'probe_tls_version_info{{{tp},version="{tls.version}"}} 1.0\n')
            declared, f = self._declared.get(t, {}).get(p), r.facts
            if declared is not None or f.endpoints_up is not None or f.contexts is not None:
                self._declared_series(r, declared, slot)
            # results reach the exporters one at a time (the service's plans lock), so the
            # last agent state seen here is the one the gauge shows
            agent_state = ev.agent_state
            if agent_state is not self._shown_agent:
                self._shown_agent = agent_state
                for s, v in STATE_VALUES:
                    self.agent.labels(v).set(1 if agent_state == s else 0)

    def _declared_series(self, r: ProbeResult, declared: Facts | None, slot: int) -> None:
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
            target_slot = self._slot((t, ""))
            self._set(
                "pacs_failover_active",
                target_slot,
                (
                    f'pacs_failover_active{{target="{t}",endpoint="{ep}"}} '
                    f"{1.0 if active == ep else 0.0}\n"
                    for ep in up
                ),
            )
            self._set(
                "pacs_failover_endpoint_up",
                target_slot,
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
                slot,
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
                parts.append(HEADERS[name])
                parts.extend(filter(None, self._frag[name]))  # empty and freed slots are None
                if parts[-1] is HEADERS[name]:
                    parts.pop()  # no series of this family: no header either
        parts.append(generate_latest(self._agent_metrics))
        return parts

    def render(self) -> bytes:
        return b"".join(self.render_parts())
