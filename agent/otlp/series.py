"""SeriesState: the OTLP exporter's own compact state, fed by the pipeline (add_target,
observe, event) and read as points at export time (agent.otlp.instruments encodes them).

Counters are plain ints and histograms agent.otlp.expo.ExpoHistogram per attribute set, keyed
by (target, probe[, third attribute]) tuples: a few hundred bytes per series instead of the
SDK's per-attribute-set aggregation objects (BENCHMARKS.md "OTLP cost"). Gauges keep the
latest value and are turned into points by their obs_<key>() method. No probe is named here:
failover node and context series exist because a run reported them or the probe declared
them (TargetInfo.declared).
"""

from __future__ import annotations

import threading
import time

from agent.evaluator import CheckStatus, HealthState
from agent.observation import (
    AgentEvent,
    Maintenance,
    Observation,
    SelfProbeOverhead,
    TargetInfo,
    TargetSettings,
)
from agent.otlp.expo import ExpoHistogram
from agent.otlp.wire import Point
from agent.otlp.wire import gauge as _o
from agent.slo import ProbeObjectives
from probes.base import Facts, ProbeResult, Reason

# Base-2 exponential histograms: 160 buckets (the SDK default) keep ~4 % relative error when one
# series spans 1 ms .. 60 s, finer when it spans less (the scale is picked per series).
HISTOGRAM_MAX_SIZE = 160

STATES = (HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY, HealthState.UNKNOWN)
STATUSES = (CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL)

Key2 = tuple[str, str]
Key3 = tuple[str, str, str]


class SeriesState:
    """Everything an export reads, under one lock; observe() costs a few dict updates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, list[str]] = {}
        self._success: dict[Key2, int] = {}
        self._last_duration: dict[Key2, float] = {}
        self._quantiles: dict[Key2, dict[float, float]] = {}
        self._check: dict[Key2, CheckStatus] = {}
        self._target_state: dict[str, HealthState] = {}
        self._agent_state: HealthState | None = None
        self._failover: dict[str, str | None] = {}
        # target → probe → the facts it declares for a run that found nothing (TargetInfo)
        self._declared: dict[str, dict[str, Facts]] = {}
        self._failover_up: dict[str, dict[str, bool]] = {}  # target → node → answered
        # (target, probe) → (sop_class, transfer_syntax, accepted) of a probe reporting contexts
        self._contexts: dict[Key2, list[tuple[str, str, bool]]] = {}
        self._tls: dict[Key2, tuple[float, float]] = {}
        self._self_probe: float | None = None
        self._slos: dict[Key2, ProbeObjectives] = {}
        self._maintenance: dict[str, bool] = {}
        self._settings: dict[str, tuple[float, float]] = {}  # target → (degraded, cert warning)
        # Cumulative series. As with the SDK before, a removed target's counters and histograms
        # keep their last value (a collector sees no reset) and stop growing.
        self._runs: dict[Key3, int] = {}
        self._failures: dict[Key3, int] = {}
        self._dicom_status: dict[Key3, int] = {}
        self._attempts: dict[Key2, int] = {}
        self._out_of_range: dict[Key2, int] = {}
        self._slow_runs: dict[Key2, int] = {}
        self._duration: dict[Key2, ExpoHistogram] = {}
        self._phase: dict[Key3, ExpoHistogram] = {}
        self._start_ns = time.time_ns()  # start of every cumulative series

    # -- fed by the pipeline -------------------------------------------------------------------

    def add_target(self, target: TargetInfo) -> None:
        if not target.metrics_enabled:
            return
        tid, probes, slos = target.id, target.probes, target.slos
        with self._lock:
            self._targets[tid] = list(probes)
            if target.declared:  # most targets declare nothing: no empty dict for each
                self._declared[tid] = dict(target.declared)
            else:
                self._declared.pop(tid, None)
            self._settings[tid] = (target.degraded_latency, target.cert_warning_seconds)
            for p in probes:
                if p in slos:
                    self._slos[(tid, p)] = slos[p]
                else:
                    self._slos.pop((tid, p), None)
                # Counters start at 0 so rate() works from the first run (failures by reason
                # are created when they happen: 12 reasons x every probe would be most of an
                # export's points).
                for res in ("success", "failure"):
                    self._runs.setdefault((tid, p, res), 0)
                self._attempts.setdefault((tid, p), 0)
                if p in slos and slos[p].latency_threshold is not None:
                    self._slow_runs.setdefault((tid, p), 0)

    def remove_target(self, target: str) -> None:
        """Its gauges stop at once; its counters and histograms keep their last value until
        the agent restarts (a collector would read a vanished cumulative series as a reset)."""
        with self._lock:
            self._targets.pop(target, None)
            self._target_state.pop(target, None)
            self._failover.pop(target, None)
            self._failover_up.pop(target, None)
            self._declared.pop(target, None)
            self._maintenance.pop(target, None)
            self._settings.pop(target, None)
            for d in (self._success, self._last_duration, self._quantiles, self._check, self._tls,
                      self._slos, self._contexts):
                for key in [k for k in d if k[0] == target]:
                    del d[key]

    def observe(self, obs: Observation) -> None:
        r, ev = obs.result, obs.evaluation
        out_of_range = obs.recorded.out_of_range
        t, p = r.target, r.probe
        tp = (t, p)
        with self._lock:
            if t not in self._targets:
                return  # removed by a reload while this run was going: no new series for it
            k = (t, p, "success" if r.ok else "failure")
            self._runs[k] = self._runs.get(k, 0) + 1
            self._attempts[tp] = self._attempts.get(tp, 0) + r.attempts
            if r.ok:  # a failed run's duration is not latency
                h = self._duration.get(tp)
                if h is None:
                    h = self._duration[tp] = ExpoHistogram()
                h.record(r.duration, HISTOGRAM_MAX_SIZE)
                for name, v in r.phases.items():
                    pk = (t, p, name)
                    h = self._phase.get(pk)
                    if h is None:
                        h = self._phase[pk] = ExpoHistogram()
                    h.record(v, HISTOGRAM_MAX_SIZE)
            else:
                k = (t, p, (r.reason or Reason.ERROR).value)
                self._failures[k] = self._failures.get(k, 0) + 1
                if r.facts.dicom_status:  # a bounded label (probes.dicom_status)
                    k = (t, p, r.facts.dicom_status)
                    self._dicom_status[k] = self._dicom_status.get(k, 0) + 1
            if out_of_range:
                self._out_of_range[tp] = self._out_of_range.get(tp, 0) + out_of_range
            obj = self._slos.get(tp)
            if obj is not None and obj.is_slow(r.ok, r.duration):
                self._slow_runs[tp] = self._slow_runs.get(tp, 0) + 1
            self._success[tp] = 1 if r.ok else 0
            self._last_duration[tp] = r.duration
            self._quantiles[tp] = dict(obs.recorded.quantiles)
            self._check[tp] = ev.check.status
            self._target_state[t] = ev.target_after
            self._agent_state = ev.agent_state
            if r.tls is not None:
                self._tls[tp] = (r.tls.leaf_not_after, r.tls.earliest_not_after)
            self._declared_series(r, self._declared.get(t, {}).get(p))

    def _declared_series(self, r: ProbeResult, declared: Facts | None) -> None:
        """Failover nodes and proposed contexts, for any probe reporting or declaring them; a
        failed run's come from what the probe declared (every node down, every pair refused).
        Called with the lock held."""
        t, f = r.target, r.facts
        up = f.endpoints_up
        if up is None and declared is not None:
            up = declared.endpoints_up
        if up is not None:
            self._failover[t] = f.active_endpoint if r.ok else None
            # every configured node (primary, secondary, secondary2, ...) gets a series
            self._failover_up[t] = {ep: bool(r.ok and ok) for ep, ok in up.items()}
        contexts = f.contexts
        if contexts is None and declared is not None:
            contexts = declared.contexts
        if contexts is not None:
            self._contexts[(t, r.probe)] = list(contexts)

    def event(self, ev: AgentEvent) -> None:
        """Agent-level events; the ones OTLP has no instrument for are ignored."""
        with self._lock:
            if isinstance(ev, SelfProbeOverhead):
                self._self_probe = ev.seconds
            elif isinstance(ev, Maintenance):
                self._maintenance.update(ev.active)
            elif isinstance(ev, TargetSettings) and ev.target.id in self._targets:
                self._settings[ev.target.id] = (
                    ev.target.degraded_latency, ev.target.cert_warning_seconds
                )

    # -- gauges: their points at export time (the export thread) ------------------------------

    def obs_success(self) -> list[Point]:
        with self._lock:
            items = list(self._success.items())
        return [_o(v, {"target": t, "probe": p}) for (t, p), v in items]

    def obs_last_duration(self) -> list[Point]:
        with self._lock:
            items = list(self._last_duration.items())
        return [_o(v, {"target": t, "probe": p}) for (t, p), v in items]

    def obs_quantiles(self) -> list[Point]:
        with self._lock:
            items = [(k, list(qs.items())) for k, qs in self._quantiles.items()]
        return [
            _o(v, {"target": t, "probe": p, "quantile": str(q)})
            for (t, p), qs in items for q, v in qs
        ]

    def obs_check(self) -> list[Point]:
        with self._lock:
            items = list(self._check.items())
        return [
            _o(1 if status == s else 0, {"target": t, "probe": p, "status": s.value})
            for (t, p), status in items for s in STATUSES
        ]

    def obs_target_health(self) -> list[Point]:
        with self._lock:
            # no result yet reads UNKNOWN, as on /metrics
            items = [
                (t, self._target_state.get(t, HealthState.UNKNOWN)) for t in self._targets
            ]
        return [
            _o(1 if state == s else 0, {"target": t, "state": s.value})
            for t, state in items for s in STATES
        ]

    def obs_agent_health(self) -> list[Point]:
        with self._lock:
            state = self._agent_state or HealthState.UNKNOWN
        return [_o(1 if state == s else 0, {"state": s.value}) for s in STATES]

    def obs_failover_active(self) -> list[Point]:
        with self._lock:
            items = [(t, a, list(self._failover_up.get(t, {}))) for t, a in self._failover.items()]
        return [
            _o(1 if active == ep else 0, {"target": t, "endpoint": ep})
            for t, active, eps in items for ep in eps
        ]

    def obs_failover_endpoint_up(self) -> list[Point]:
        with self._lock:
            items = [(t, list(up.items())) for t, up in self._failover_up.items()]
        return [
            _o(1 if ok else 0, {"target": t, "endpoint": ep})
            for t, up in items for ep, ok in up
        ]

    def obs_context_accepted(self) -> list[Point]:
        with self._lock:
            items = [(t, list(cx)) for (t, _p), cx in self._contexts.items()]
        return [
            _o(1 if ok else 0, {"target": t, "sop_class": sop, "transfer_syntax": ts})
            for t, cx in items for sop, ts, ok in cx
        ]

    def obs_tls_earliest(self) -> list[Point]:
        with self._lock:
            items = list(self._tls.items())
        return [_o(v[1], {"target": t, "probe": p}) for (t, p), v in items]

    def obs_tls_leaf(self) -> list[Point]:
        with self._lock:
            items = list(self._tls.items())
        return [_o(v[0], {"target": t, "probe": p}) for (t, p), v in items]

    def obs_self_probe(self) -> list[Point]:
        with self._lock:
            v = self._self_probe
        return [] if v is None else [_o(v)]

    def obs_slo_objective(self) -> list[Point]:
        with self._lock:
            items = [(k, o.ratios()) for k, o in self._slos.items()]
        return [
            _o(v, {"target": t, "probe": p, "slo": slo})
            for (t, p), ratios in items for slo, v in ratios.items()
        ]

    def obs_maintenance(self) -> list[Point]:
        with self._lock:
            items = [(t, self._maintenance.get(t, False)) for t in self._targets]
        return [_o(1 if on else 0, {"target": t}) for t, on in items]

    def obs_degraded_latency(self) -> list[Point]:
        with self._lock:
            items = [(t, v[0]) for t, v in self._settings.items() if t in self._targets]
        return [_o(v, {"target": t}) for t, v in items]

    def obs_cert_warning(self) -> list[Point]:
        with self._lock:
            items = [(t, v[1]) for t, v in self._settings.items() if t in self._targets]
        return [_o(v, {"target": t}) for t, v in items]

    def obs_targets_count(self) -> list[Point]:
        with self._lock:
            n = len(self._targets)
        return [_o(n)]
