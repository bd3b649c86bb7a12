"""OTLPExporter: the pipeline's Exporter on an SDK MeterProvider, instruments from the catalogue."""


from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics as otel_api
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    Counter,
    Exemplar,
    ExemplarReservoir,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource

from agent import __version__
from agent.evaluator import CheckStatus, HealthState
from agent.metrics_catalogue import OTLP_FAMILIES
from agent.observation import (
    AgentEvent,
    Maintenance,
    SelfProbeOverhead,
    TargetInfo,
    TargetSettings,
)
from agent.observation import Observation as ResultObservation  # the SDK has an Observation
from agent.otlp.delivery import CountingExporter, FailureLog, make_metric_exporter
from agent.otlp.resource import build_resource
from agent.otlp.settings import OTLPSettings, display_url
from agent.slo import ProbeObjectives
from probes.base import Facts, ProbeResult, Reason

log = logging.getLogger("agent.otlp")

# Per-instrument cardinality limit, raised from the SDK's 2000 on the reader (cardinality_limits):
# 1,000 targets x 5 probes x 12 failure reasons is 60,000 series, x ~8 phases 40,000.
# Beyond this limit the SDK folds further series into one `otel.metric.overflow=true` point.
CARDINALITY_LIMIT = 100_000
# Base-2 exponential histograms: 160 buckets (the SDK default) keep ~4 % relative error when one
# series spans 1 ms .. 60 s, finer when it spans less (the SDK picks the scale per series).
HISTOGRAM_MAX_SIZE = 160

STATES = (HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY, HealthState.UNKNOWN)
STATUSES = (CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL)


# -- the exporter --------------------------------------------------------------------------------


class _NoExemplarReservoir(ExemplarReservoir):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def offer(self, value: Any, time_unix_nano: int, attributes: Any, context: Any) -> None:
        return None

    def collect(self, point_attributes: Any) -> list[Exemplar]:
        return []


def _no_exemplars(_aggregation_type: type) -> Callable[..., ExemplarReservoir]:
    return _NoExemplarReservoir


@dataclass(frozen=True)
class Instrument:
    key: str  # attribute of OTLPExporter (gauges: its callback is _obs_<key>)
    name: str
    kind: str  # histogram | counter | gauge
    unit: str
    help: str
    prometheus: str  # the /metrics name it corresponds to (docs/otlp.md)


# From the catalogue (agent.metrics_catalogue), which documents the naming rule.
INSTRUMENTS = tuple(
    Instrument(f.otlp.key, f.otlp.name, f.otlp.kind, f.otlp.unit, f.otlp_help, f.name)
    for f in OTLP_FAMILIES if f.otlp is not None
)


class OTLPExporter:
    """The pipeline's Exporter protocol (agent/pipeline.py) on top of an SDK MeterProvider."""

    # The synchronous instruments, set in __init__ from INSTRUMENTS by key (gauges need no
    # attribute: the SDK calls their _obs_<key> callbacks).
    duration: otel_api.Histogram
    phase: otel_api.Histogram
    runs: otel_api.Counter
    failures: otel_api.Counter
    attempts: otel_api.Counter
    out_of_range: otel_api.Counter
    dicom_status: otel_api.Counter
    slow_runs: otel_api.Counter

    def __init__(
        self,
        settings: OTLPSettings,
        *,
        on_failure: Callable[[], None] = lambda: None,
        shard: str | None = None,
        resource: Resource | None = None,
        metric_exporter: MetricExporter | None = None,
    ) -> None:
        self.settings = settings
        self.resource = resource or build_resource(shard)
        self._lock = threading.Lock()
        self._targets: dict[str, list[str]] = {}
        self._success: dict[tuple[str, str], int] = {}
        self._last_duration: dict[tuple[str, str], float] = {}
        self._quantiles: dict[tuple[str, str], dict[float, float]] = {}
        self._check: dict[tuple[str, str], CheckStatus] = {}
        self._target_state: dict[str, HealthState] = {}
        self._agent_state: HealthState | None = None
        self._failover: dict[str, str | None] = {}
        # target → probe → the facts it declares for a run that found nothing (TargetInfo)
        self._declared: dict[str, dict[str, Facts]] = {}
        self._failover_up: dict[str, dict[str, bool]] = {}  # target → node → answered
        # (target, probe) → (sop_class, transfer_syntax, accepted) of dicom_capabilities
        self._contexts: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
        self._tls: dict[tuple[str, str], tuple[float, float]] = {}
        self._self_probe: float | None = None
        self._slos: dict[tuple[str, str], ProbeObjectives] = {}
        self._maintenance: dict[str, bool] = {}
        self._settings: dict[str, tuple[float, float]] = {}  # target → (degraded, cert warning)

        self.failure_log = FailureLog(display_url(settings.endpoint))
        self.exporter = CountingExporter(
            metric_exporter or make_metric_exporter(settings), on_failure, self.failure_log,
            budget=settings.interval,
        )
        limit = CARDINALITY_LIMIT
        self.reader = PeriodicExportingMetricReader(
            self.exporter,
            export_interval_millis=settings.interval * 1000.0,
            # Bounds the observable-gauge callbacks (local work; a collection that overruns it is
            # skipped); the network part is bounded by the exporters' own timeout and budget.
            export_timeout_millis=max(settings.interval, 30.0) * 1000.0,
            cardinality_limits={
                Counter: limit, UpDownCounter: limit, Histogram: limit, ObservableGauge: limit,
                ObservableCounter: limit, ObservableUpDownCounter: limit,
            },
        )
        expo = ExponentialBucketHistogramAggregation(max_size=HISTOGRAM_MAX_SIZE)
        self.provider = MeterProvider(
            metric_readers=[self.reader],
            resource=self.resource,
            shutdown_on_exit=False,  # AgentService.stop() shuts it down with a bounded flush
            # No traces here, so no exemplars: skipping their reservoirs saves ~30 % of a collect.
            exemplar_filter=AlwaysOffExemplarFilter(),
            # One view per instrument type (an instrument matching two views would be exported
            # twice): histograms become base-2 exponential histograms.
            views=[
                View(instrument_type=Histogram, aggregation=expo,
                     exemplar_reservoir_factory=_no_exemplars),
                View(instrument_type=Counter, exemplar_reservoir_factory=_no_exemplars),
                View(instrument_type=ObservableGauge, exemplar_reservoir_factory=_no_exemplars),
            ],
        )
        m = self.provider.get_meter("pacs-health-agent", __version__)
        for spec in INSTRUMENTS:
            if spec.kind == "histogram":
                inst: Any = m.create_histogram(spec.name, unit=spec.unit, description=spec.help)
            elif spec.kind == "counter":
                inst = m.create_counter(spec.name, unit=spec.unit, description=spec.help)
            else:
                inst = m.create_observable_gauge(
                    spec.name, callbacks=[getattr(self, "_obs_" + spec.key)], unit=spec.unit,
                    description=spec.help,
                )
            setattr(self, spec.key, inst)
        self._closed = False
        log.info("OTLP export (%s) to %s every %.1f s (timeout %.1f s)", settings.protocol,
                 display_url(settings.endpoint), settings.interval, settings.timeout)

    # -- Exporter protocol ---------------------------------------------------------------------

    def add_target(self, target: TargetInfo) -> None:
        if not target.metrics_enabled:
            return
        tid, probes, slos = target.id, target.probes, target.slos
        with self._lock:
            self._targets[tid] = list(probes)
            self._declared[tid] = dict(target.declared)
            self._settings[tid] = (target.degraded_latency, target.cert_warning_seconds)
            for p in probes:
                if p in slos:
                    self._slos[(tid, p)] = slos[p]
                else:
                    self._slos.pop((tid, p), None)
        # Counters start at 0 so rate() works from the first run (failures by reason are created
        # when they happen: 12 reasons x every probe would be most of an export's points).
        for p in probes:
            for res in ("success", "failure"):
                self.runs.add(0, {"target": tid, "probe": p, "result": res})
            self.attempts.add(0, {"target": tid, "probe": p})
            if p in slos and slos[p].latency_threshold is not None:
                self.slow_runs.add(0, {"target": tid, "probe": p})

    def remove_target(self, target: str) -> None:
        """Its gauges stop at once; the SDK cannot delete counter/histogram series, which keep
        their last value until the agent restarts (bounded by CARDINALITY_LIMIT)."""
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

    def observe(self, obs: ResultObservation) -> None:
        r, ev = obs.result, obs.evaluation
        out_of_range = obs.recorded.out_of_range
        t, p = r.target, r.probe
        with self._lock:
            if t not in self._targets:
                return  # removed by a reload while this run was going: no new series for it
        tp = {"target": t, "probe": p}
        self.runs.add(1, {**tp, "result": "success" if r.ok else "failure"})
        self.attempts.add(r.attempts, tp)
        if r.ok:  # a failed run's duration is not latency
            self.duration.record(r.duration, tp)
            for name, v in r.phases.items():
                self.phase.record(v, {**tp, "phase": name})
        else:
            self.failures.add(1, {**tp, "reason": (r.reason or Reason.ERROR).value})
            if r.facts.dicom_status:  # a bounded label (probes.dicom_status)
                self.dicom_status.add(1, {**tp, "status": r.facts.dicom_status})
        if out_of_range:
            self.out_of_range.add(out_of_range, tp)
        with self._lock:
            obj = self._slos.get((t, p))
        if obj is not None and obj.is_slow(r.ok, r.duration):
            self.slow_runs.add(1, tp)
        with self._lock:
            if t not in self._targets:
                return  # removed meanwhile: do not resurrect its gauges
            self._success[(t, p)] = 1 if r.ok else 0
            self._last_duration[(t, p)] = r.duration
            self._quantiles[(t, p)] = dict(obs.recorded.quantiles)
            self._check[(t, p)] = ev.check.status
            self._target_state[t] = ev.target_after
            self._agent_state = ev.agent_state
            if r.tls is not None:
                self._tls[(t, p)] = (r.tls.leaf_not_after, r.tls.earliest_not_after)
            self._declared_series(r, self._declared.get(t, {}).get(p))

    def _declared_series(self, r: ProbeResult, declared: Facts | None) -> None:
        """Failover nodes and proposed contexts, for any probe reporting or declaring them; a
        failed run's come from what the probe declared (every node down, every pair refused)."""
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

    # -- observable gauge callbacks (the reader's thread) --------------------------------------

    def _obs_success(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._success.items())
        return [Observation(v, {"target": t, "probe": p}) for (t, p), v in items]

    def _obs_last_duration(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._last_duration.items())
        return [Observation(v, {"target": t, "probe": p}) for (t, p), v in items]

    def _obs_quantiles(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = [(k, list(qs.items())) for k, qs in self._quantiles.items()]
        return [
            Observation(v, {"target": t, "probe": p, "quantile": str(q)})
            for (t, p), qs in items for q, v in qs
        ]

    def _obs_check(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._check.items())
        return [
            Observation(1 if status == s else 0, {"target": t, "probe": p, "status": s.value})
            for (t, p), status in items for s in STATUSES
        ]

    def _obs_target_health(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            # no result yet reads UNKNOWN, as on /metrics
            items = [
                (t, self._target_state.get(t, HealthState.UNKNOWN)) for t in self._targets
            ]
        return [
            Observation(1 if state == s else 0, {"target": t, "state": s.value})
            for t, state in items for s in STATES
        ]

    def _obs_agent_health(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            state = self._agent_state or HealthState.UNKNOWN
        return [Observation(1 if state == s else 0, {"state": s.value}) for s in STATES]

    def _obs_failover_active(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = [(t, a, list(self._failover_up.get(t, {}))) for t, a in self._failover.items()]
        return [
            Observation(1 if active == ep else 0, {"target": t, "endpoint": ep})
            for t, active, eps in items for ep in eps
        ]

    def _obs_failover_endpoint_up(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = [(t, list(up.items())) for t, up in self._failover_up.items()]
        return [
            Observation(1 if ok else 0, {"target": t, "endpoint": ep})
            for t, up in items for ep, ok in up
        ]

    def _obs_context_accepted(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = [(t, list(cx)) for (t, _p), cx in self._contexts.items()]
        return [
            Observation(1 if ok else 0, {"target": t, "sop_class": sop, "transfer_syntax": ts})
            for t, cx in items for sop, ts, ok in cx
        ]

    def _obs_tls_earliest(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._tls.items())
        return [Observation(v[1], {"target": t, "probe": p}) for (t, p), v in items]

    def _obs_tls_leaf(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._tls.items())
        return [Observation(v[0], {"target": t, "probe": p}) for (t, p), v in items]

    def _obs_self_probe(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            v = self._self_probe
        return [] if v is None else [Observation(v)]

    def _obs_slo_objective(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = [(k, o.ratios()) for k, o in self._slos.items()]
        return [
            Observation(v, {"target": t, "probe": p, "slo": slo})
            for (t, p), ratios in items for slo, v in ratios.items()
        ]

    def _obs_maintenance(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = [(t, self._maintenance.get(t, False)) for t in self._targets]
        return [Observation(1 if on else 0, {"target": t}) for t, on in items]

    def _obs_degraded_latency(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = [(t, v[0]) for t, v in self._settings.items() if t in self._targets]
        return [Observation(v, {"target": t}) for t, v in items]

    def _obs_cert_warning(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = [(t, v[1]) for t, v in self._settings.items() if t in self._targets]
        return [Observation(v, {"target": t}) for t, v in items]

    def _obs_targets_count(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            n = len(self._targets)
        return [Observation(n)]

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def final_flush_bound(self) -> float:
        """Seconds shutdown() may take: one request's timeout plus a margin for the collection."""
        return self.settings.timeout + 2.0

    def shutdown(self) -> None:
        """Final export of the latest values, then close; bounded by final_flush_bound."""
        if self._closed:
            return
        self._closed = True
        try:
            self.provider.shutdown(timeout_millis=self.final_flush_bound * 1000.0)
        except Exception as e:  # noqa: BLE001 - stopping must go on
            log.warning("OTLP shutdown: %s", e)

