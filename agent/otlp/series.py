"""SeriesState: the OTLP exporter's own compact state, fed by the pipeline (add_target,
observe, event) and read as points at export time (agent.otlp.instruments encodes them).

One ProbeSeries record per (target, probe) holds all of its series: counters as plain ints,
its run duration and phase histograms in one agent.otlp.expo.Histograms, gauges as their
latest value. That is instead of the SDK's per-attribute-set aggregation objects (BENCHMARKS.md
"OTLP cost"), and of a dict entry and key tuple per series with an object per histogram, which
took ~1.7 KB more per (target, probe): 5 MB at 1,000 targets x 3 probes. Per-target gauges stay
in dicts keyed by target. An instrument reads its rows (records, targets or the agent) with
SeriesState._<key> (counters, histograms) or obs_<key>() (gauges), a slice of rows at a time
with the lock held. No probe is named here: failover node and context series exist because a
run reported them or the probe declared them (TargetInfo.declared).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Any

from agent.evaluator import CheckStatus, HealthState
from agent.observation import (
    AgentEvent,
    Maintenance,
    Observation,
    SelfProbeOverhead,
    TargetInfo,
    TargetSettings,
)
from agent.otlp.expo import Histograms
from agent.otlp.wire import Attrs, kv
from agent.otlp.wire import target_probe as _tp
from agent.slo import ProbeObjectives
from probes.base import Facts, ProbeResult, Reason

# Base-2 exponential histograms: 160 buckets (the SDK default) keep ~4 % relative error when one
# series spans 1 ms .. 60 s, finer when it spans less (the scale is picked per series).
HISTOGRAM_MAX_SIZE = 160

STATES = (HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY, HealthState.UNKNOWN)
STATUSES = (CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL)

Row = tuple[Attrs, Any]  # a point's attributes and its value (a number or an ExpoPoint)
Reader = Callable[[list[Any]], Iterator[Row]]

# Rows of the instruments that are not per (target, probe); the others read ProbeSeries.
_TARGET_ROWS = frozenset({"target_health", "maintenance", "degraded_latency", "cert_warning"})
_FAILOVER_ROWS = frozenset({"failover_active", "failover_endpoint_up"})
_AGENT_ROWS = frozenset({"agent_health", "self_probe", "targets_count"})
_AGENT: list[Any] = [None]  # the agent's instruments have one row


class ProbeSeries:
    """One (target, probe)'s series. None: no such series (yet, or any more for a gauge of a
    removed target); counters and histograms are never reset to None."""

    __slots__ = (
        "target", "probe",
        # gauges
        "success", "last_duration", "quantile_keys", "quantiles", "check", "tls", "slo",
        "contexts",
        # cumulative
        "runs_ok", "runs_failed", "attempts", "out_of_range", "slow_runs", "failures",
        "dicom_status", "hists", "phase_names",
    )

    def __init__(self, target: str, probe: str) -> None:
        self.target = target
        self.probe = probe
        self.success: int | None = None
        self.last_duration: float | None = None
        # the window's quantiles as two tuples (keys shared by every record, values), where a
        # dict of three took ~150 bytes more per (target, probe)
        self.quantile_keys: tuple[float, ...] = ()
        self.quantiles: tuple[float, ...] | None = None
        self.check: CheckStatus | None = None
        self.tls: tuple[float, float] | None = None  # (leaf, earliest) not-after
        self.slo: ProbeObjectives | None = None
        # (sop_class, transfer_syntax, accepted) of a probe reporting contexts
        self.contexts: tuple[tuple[str, str, bool], ...] | None = None
        self.runs_ok: int | None = None
        self.runs_failed: int | None = None
        self.attempts: int | None = None
        self.out_of_range: int | None = None
        self.slow_runs: int | None = None
        self.failures: dict[str, int] | None = None  # reason → count
        self.dicom_status: dict[str, int] | None = None  # status label → count
        # histogram 0: the duration of successful runs; 1, 2, ...: each phase of phase_names (a
        # tuple shared by the records of the same phases)
        self.hists: Histograms | None = None
        self.phase_names: tuple[str, ...] = ()

    def clear_gauges(self) -> None:
        self.success = self.last_duration = self.quantiles = self.check = None
        self.tls = self.slo = self.contexts = None


def _count(counts: dict[str, int] | None, key: str) -> dict[str, int]:
    if counts is None:
        return {key: 1}
    counts[key] = counts.get(key, 0) + 1
    return counts


def _field(rows: list[ProbeSeries], name: str) -> Iterator[Row]:
    """A (target, probe) series that is one field of the record; None: no such series."""
    get = attrgetter(name)
    for s in rows:
        v = get(s)
        if v is not None:
            yield _tp(s.target, s.probe), v


def _labelled_counts(
    rows: list[ProbeSeries], counts_of: Callable[[ProbeSeries], dict[str, int] | None], label: str
) -> Iterator[Row]:
    """A counter by a third, bounded label (failure reason, DICOM status), created when used."""
    for s in rows:
        counts = counts_of(s)
        if counts:
            tp = _tp(s.target, s.probe)
            for value, n in counts.items():
                yield (*tp, kv(label, value)), n


_RESULT_OK = kv("result", "success")
_RESULT_FAILED = kv("result", "failure")
_STATUS_KV = tuple((s, kv("status", s.value)) for s in STATUSES)
_STATE_KV = tuple((s, kv("state", s.value)) for s in STATES)


class SeriesState:
    """Everything an export reads, under one lock; observe() costs a few attribute updates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, tuple[str, ...]] = {}  # target → its probes
        # Never deleted: as with the SDK before, a removed target's counters and histograms
        # keep their last value (a collector sees no reset) and stop growing; its gauges are
        # cleared at once (ProbeSeries.clear_gauges).
        self._series: dict[str, dict[str, ProbeSeries]] = {}  # target → probe → its series
        self._target_state: dict[str, HealthState] = {}
        self._agent_state: HealthState | None = None
        self._failover: dict[str, str | None] = {}
        # target → probe → the facts it declares for a run that found nothing (TargetInfo)
        self._declared: dict[str, dict[str, Facts]] = {}
        self._failover_up: dict[str, dict[str, bool]] = {}  # target → node → answered
        self._self_probe: float | None = None
        self._maintenance: dict[str, bool] = {}
        self._settings: dict[str, tuple[float, float]] = {}  # target → (degraded, cert warning)
        # the distinct quantile key sets (the recorder's QUANTILES, or none) and phase name
        # sets: one tuple each, shared by the records
        self._shared: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._start_ns = time.time_ns()  # start of every cumulative series

    # -- fed by the pipeline -------------------------------------------------------------------

    def add_target(self, target: TargetInfo) -> None:
        if not target.metrics_enabled:
            return
        tid, probes, slos = target.id, target.probes, target.slos
        with self._lock:
            self._targets[tid] = tuple(probes)
            if target.declared:  # most targets declare nothing: no empty dict for each
                self._declared[tid] = dict(target.declared)
            else:
                self._declared.pop(tid, None)
            self._settings[tid] = (target.degraded_latency, target.cert_warning_seconds)
            by_probe = self._series.setdefault(tid, {})
            for p in probes:
                _tp(tid, p)  # its attributes encoded now, not within an export
                s = by_probe.get(p)
                if s is None:
                    s = by_probe[p] = ProbeSeries(tid, p)
                s.slo = slos.get(p)
                # Counters start at 0 so rate() works from the first run (failures by reason
                # are created when they happen: 12 reasons x every probe would be most of an
                # export's points).
                if s.runs_ok is None:
                    s.runs_ok = 0
                if s.runs_failed is None:
                    s.runs_failed = 0
                if s.attempts is None:
                    s.attempts = 0
                slo = s.slo
                if s.slow_runs is None and slo is not None and slo.latency_threshold is not None:
                    s.slow_runs = 0

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
            for s in self._series.get(target, {}).values():
                s.clear_gauges()

    def observe(self, obs: Observation) -> None:
        r, ev = obs.result, obs.evaluation
        out_of_range = obs.recorded.out_of_range
        t, p = r.target, r.probe
        with self._lock:
            if t not in self._targets:
                return  # removed by a reload while this run was going: no new series for it
            by_probe = self._series.setdefault(t, {})
            s = by_probe.get(p)
            if s is None:  # a probe the target did not list (add_target creates the others)
                s = by_probe[p] = ProbeSeries(t, p)
            s.attempts = (s.attempts or 0) + r.attempts
            if r.ok:  # a failed run's duration is not latency
                s.runs_ok = (s.runs_ok or 0) + 1
                hs = s.hists
                if hs is None:
                    names = tuple(r.phases)
                    s.phase_names = self._shared.setdefault(names, names)
                    hs = s.hists = Histograms(1 + len(names))
                hs.record(0, r.duration, HISTOGRAM_MAX_SIZE)
                names = s.phase_names
                for name, v in r.phases.items():
                    try:
                        k = names.index(name) + 1
                    except ValueError:  # a phase it had not reported before
                        k = hs.add()
                        names = (*names, name)
                        s.phase_names = names = self._shared.setdefault(names, names)
                    hs.record(k, v, HISTOGRAM_MAX_SIZE)
            else:
                s.runs_failed = (s.runs_failed or 0) + 1
                s.failures = _count(s.failures, (r.reason or Reason.ERROR).value)
                if r.facts.dicom_status:  # a bounded label (probes.dicom_status)
                    s.dicom_status = _count(s.dicom_status, r.facts.dicom_status)
            if out_of_range:
                s.out_of_range = (s.out_of_range or 0) + out_of_range
            obj = s.slo
            if obj is not None and obj.is_slow(r.ok, r.duration):
                s.slow_runs = (s.slow_runs or 0) + 1
            s.success = 1 if r.ok else 0
            s.last_duration = r.duration
            qs = obs.recorded.quantiles
            keys = tuple(qs)
            s.quantile_keys = self._shared.setdefault(keys, keys)
            s.quantiles = tuple(qs.values())
            s.check = ev.check.status
            self._target_state[t] = ev.target_after
            self._agent_state = ev.agent_state
            if r.tls is not None:
                s.tls = (r.tls.leaf_not_after, r.tls.earliest_not_after)
            self._declared_series(r, s, self._declared.get(t, {}).get(p))

    def _declared_series(self, r: ProbeResult, s: ProbeSeries, declared: Facts | None) -> None:
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
            s.contexts = tuple(contexts)  # Facts holds a tuple already: no copy

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

    # -- export (the export thread) ------------------------------------------------------------

    def rows(self, key: str, kind: str) -> tuple[list[Any], Reader]:
        """An instrument's rows now and the reader that turns a slice of them into its points,
        to be called with the lock held: rows are kept (never deleted) records, or targets and
        agent that the reader skips if they are gone by then."""
        read: Reader = getattr(self, ("obs_" if kind == "gauge" else "_") + key)
        with self._lock:
            if key in _TARGET_ROWS:
                return list(self._targets), read
            if key in _FAILOVER_ROWS:
                return list(self._failover_up), read
            if key in _AGENT_ROWS:
                return _AGENT, read
            return [s for by_probe in self._series.values() for s in by_probe.values()], read

    # counters and histograms: ProbeSeries rows

    def _runs(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        for s in rows:
            tp = _tp(s.target, s.probe)
            if s.runs_ok is not None:
                yield (*tp, _RESULT_OK), s.runs_ok
            if s.runs_failed is not None:
                yield (*tp, _RESULT_FAILED), s.runs_failed

    def _failures(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        return _labelled_counts(rows, lambda s: s.failures, "reason")

    def _dicom_status(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        return _labelled_counts(rows, lambda s: s.dicom_status, "status")

    def _attempts(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        return _field(rows, "attempts")

    def _out_of_range(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        return _field(rows, "out_of_range")

    def _slow_runs(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        return _field(rows, "slow_runs")

    def _duration(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        return ((_tp(s.target, s.probe), s.hists.point(0)) for s in rows if s.hists is not None)

    def _phase(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        for s in rows:
            if s.hists is not None and s.phase_names:
                tp = _tp(s.target, s.probe)
                for k, name in enumerate(s.phase_names, 1):
                    yield (*tp, kv("phase", name)), s.hists.point(k)

    # gauges: ProbeSeries rows

    def obs_success(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        return _field(rows, "success")

    def obs_last_duration(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        return _field(rows, "last_duration")

    def obs_quantiles(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        for s in rows:
            if s.quantiles:
                tp = _tp(s.target, s.probe)
                for q, v in zip(s.quantile_keys, s.quantiles, strict=True):
                    yield (*tp, kv("quantile", str(q))), v

    def obs_check(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        for s in rows:
            status = s.check
            if status is not None:
                tp = _tp(s.target, s.probe)
                for st, a in _STATUS_KV:
                    yield (*tp, a), 1 if status == st else 0

    def obs_context_accepted(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        for s in rows:
            if s.contexts is not None:
                t = kv("target", s.target)
                for sop, ts, ok in s.contexts:
                    yield (t, kv("sop_class", sop), kv("transfer_syntax", ts)), 1 if ok else 0

    def obs_tls_earliest(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        return ((_tp(s.target, s.probe), s.tls[1]) for s in rows if s.tls is not None)

    def obs_tls_leaf(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        return ((_tp(s.target, s.probe), s.tls[0]) for s in rows if s.tls is not None)

    def obs_slo_objective(self, rows: list[ProbeSeries]) -> Iterator[Row]:
        for s in rows:
            if s.slo is not None:
                tp = _tp(s.target, s.probe)
                for slo, v in s.slo.ratios().items():
                    yield (*tp, kv("slo", slo)), v

    # gauges: target rows

    def obs_target_health(self, rows: list[str]) -> Iterator[Row]:
        for t in rows:
            if t in self._targets:
                # no result yet reads UNKNOWN, as on /metrics
                state = self._target_state.get(t, HealthState.UNKNOWN)
                a = kv("target", t)
                for st, sa in _STATE_KV:
                    yield (a, sa), 1 if state == st else 0

    def obs_maintenance(self, rows: list[str]) -> Iterator[Row]:
        return (((kv("target", t),), 1 if self._maintenance.get(t, False) else 0)
                for t in rows if t in self._targets)

    def obs_degraded_latency(self, rows: list[str]) -> Iterator[Row]:
        return (((kv("target", t),), self._settings[t][0]) for t in rows
                if t in self._targets and t in self._settings)

    def obs_cert_warning(self, rows: list[str]) -> Iterator[Row]:
        return (((kv("target", t),), self._settings[t][1]) for t in rows
                if t in self._targets and t in self._settings)

    def obs_failover_active(self, rows: list[str]) -> Iterator[Row]:
        for t in rows:
            if t in self._failover:
                active, a = self._failover[t], kv("target", t)
                for ep in self._failover_up.get(t, {}):
                    yield (a, kv("endpoint", ep)), 1 if active == ep else 0

    def obs_failover_endpoint_up(self, rows: list[str]) -> Iterator[Row]:
        for t in rows:
            up = self._failover_up.get(t)
            if up is not None:
                a = kv("target", t)
                for ep, ok in up.items():
                    yield (a, kv("endpoint", ep)), 1 if ok else 0

    # gauges: the agent

    def obs_agent_health(self, rows: list[Any]) -> Iterator[Row]:
        state = self._agent_state or HealthState.UNKNOWN
        return (((sa,), 1 if state == st else 0) for st, sa in _STATE_KV)

    def obs_self_probe(self, rows: list[Any]) -> Iterator[Row]:
        v = self._self_probe
        return iter(()) if v is None else iter((((), v),))

    def obs_targets_count(self, rows: list[Any]) -> Iterator[Row]:
        return iter((((), len(self._targets)),))
