"""OTLPExporter: the pipeline's Exporter, its series kept in our own compact state and written
as OTLP requests each interval (agent.otlp.wire), instruments from the catalogue.

Not the SDK's MeterProvider: at 1,000 targets x 3 probes its per-attribute-set aggregations
took ~160 MB and each collect + encode ~3 s of CPU (BENCHMARKS.md "OTLP cost"). What is sent is
the same: cumulative monotonic sums, base-2 exponential histograms (max 160 buckets,
agent.otlp.expo) and gauges, same names, units, descriptions, attributes and value types, one
resource, scope `pacs-health-agent`; the SDK's exporters still carry the requests (delivery.py).
"""


from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.resources import Resource

from agent import __version__
from agent.evaluator import CheckState, CheckStatus, HealthState
from agent.metrics_catalogue import OTLP_FAMILIES
from agent.otlp.delivery import (
    MAX_EXPORT_BATCH,
    CountingExporter,
    FailureLog,
    RequestSender,
    make_metric_exporter,
)
from agent.otlp.expo import ExpoHistogram
from agent.otlp.resource import build_resource
from agent.otlp.settings import OTLPSettings, display_url
from agent.otlp.wire import (
    MetricHead,
    Point,
    expo_point,
    kv,
    number_point,
    requests,
    resource_bytes,
    scope_bytes,
)
from agent.otlp.wire import gauge as _o
from agent.otlp.wire import target_probe as _tp
from agent.slo import ProbeObjectives
from probes.base import ProbeResult, Reason

log = logging.getLogger("agent.otlp")

# Series per instrument exported without folding (1,000 targets x 5 probes x 12 reasons is
# 60,000); nothing is folded at all now: attribute sets are targets x probes x bounded enums.
CARDINALITY_LIMIT = 100_000
# Base-2 exponential histograms: 160 buckets (the SDK default) keep ~4 % relative error when one
# series spans 1 ms .. 60 s, finer when it spans less (the scale is picked per series).
HISTOGRAM_MAX_SIZE = 160
SLICE = 1_000  # series encoded per hold of the lock at export

STATES = (HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY, HealthState.UNKNOWN)
STATUSES = (CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL)
FAILOVER_ENDPOINTS = ("primary", "secondary")

Key2 = tuple[str, str]
Key3 = tuple[str, str, str]


@dataclass(frozen=True)
class Instrument:
    key: str  # attribute of OTLPExporter's state (gauges: their points come from _obs_<key>)
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
# Counters: (target, probe) or (target, probe, third attribute) → cumulative count.
_COUNTER_THIRD = {"runs": "result", "failures": "reason", "dicom_status": "status"}


class OTLPExporter:
    """The pipeline's Exporter protocol (agent/pipeline.py); exports every settings.interval on
    its own thread, on force_flush() and a last time on shutdown()."""

    def __init__(
        self,
        settings: OTLPSettings,
        *,
        on_failure: Callable[[], None] = lambda: None,
        shard: str | None = None,
        resource: Resource | None = None,
        metric_exporter: RequestSender | None = None,
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
        self._failover_eps: dict[str, tuple[str, ...]] = {}  # target → its failover node names
        self._failover_up: dict[str, dict[str, bool]] = {}  # target → node → answered
        # (target, probe) → (sop_class, transfer_syntax, accepted) of dicom_capabilities
        self._contexts: dict[tuple[str, str], list[tuple[str, str, bool]]] = {}
        self._tls: dict[tuple[str, str], tuple[float, float]] = {}
        self._self_probe: float | None = None
        self._slos: dict[tuple[str, str], ProbeObjectives] = {}
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

        self.failure_log = FailureLog(display_url(settings.endpoint))
        self.exporter = CountingExporter(
            metric_exporter or make_metric_exporter(settings), on_failure, self.failure_log,
            budget=settings.interval,
        )
        self._resource = resource_bytes(dict(self.resource.attributes))
        self._scope = scope_bytes("pacs-health-agent", __version__)
        self._heads = {i.key: MetricHead(i.name, i.help, i.unit, i.kind) for i in INSTRUMENTS}
        self._export_lock = threading.Lock()  # one export at a time (timer, flush, shutdown)
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()
        log.info("OTLP export (%s) to %s every %.1f s (timeout %.1f s)", settings.protocol,
                 display_url(settings.endpoint), settings.interval, settings.timeout)

    # -- Exporter protocol ---------------------------------------------------------------------

    def add_target(
        self, target: str, probes: list[str],
        slos: Mapping[str, ProbeObjectives] | None = None,
    ) -> None:
        with self._lock:
            self._targets[target] = list(probes)
            for p in probes:
                if slos and p in slos:
                    self._slos[(target, p)] = slos[p]
                else:
                    self._slos.pop((target, p), None)
                # Counters start at 0 so rate() works from the first run (failures by reason
                # are created when they happen: 12 reasons x every probe would be most of an
                # export's points).
                for res in ("success", "failure"):
                    self._runs.setdefault((target, p, res), 0)
                self._attempts.setdefault((target, p), 0)
                if slos and p in slos and slos[p].latency_threshold is not None:
                    self._slow_runs.setdefault((target, p), 0)

    def remove_target(self, target: str) -> None:
        """Its gauges stop at once; its counters and histograms keep their last value until
        the agent restarts (a collector would read a vanished cumulative series as a reset)."""
        with self._lock:
            self._targets.pop(target, None)
            self._target_state.pop(target, None)
            self._failover.pop(target, None)
            self._failover_eps.pop(target, None)
            self._failover_up.pop(target, None)
            self._maintenance.pop(target, None)
            self._settings.pop(target, None)
            for d in (self._success, self._last_duration, self._quantiles, self._check, self._tls,
                      self._slos, self._contexts):
                for key in [k for k in d if k[0] == target]:
                    del d[key]

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
            self._quantiles[tp] = dict(quantiles)
            self._check[tp] = check.status
            self._target_state[t] = target_state
            self._agent_state = agent_state
            if r.tls is not None:
                self._tls[tp] = (r.tls.leaf_not_after, r.tls.earliest_not_after)
            if p == "failover":
                self._failover[t] = r.facts.active_endpoint if r.ok else None
                # every configured node (primary, secondary, secondary2, ...) gets a series
                up = r.facts.endpoints_up
                if up:
                    self._failover_eps[t] = tuple(up)
                self._failover_up[t] = {
                    ep: bool(r.ok and up and up.get(ep))
                    for ep in self._failover_eps.get(t, FAILOVER_ENDPOINTS)
                }
            if p == "dicom_capabilities":
                contexts = r.facts.contexts
                if contexts is None:  # a failed run: nothing was accepted
                    contexts = tuple(
                        (sop, ts, False) for sop, ts, _ in self._contexts.get(tp, ())
                    )
                self._contexts[tp] = list(contexts)

    def set_self_probe_overhead(self, seconds: float) -> None:
        with self._lock:
            self._self_probe = seconds

    # -- gauges: their points at export time (the export thread) ------------------------------

    def _obs_success(self) -> list[Point]:
        with self._lock:
            items = list(self._success.items())
        return [_o(v, {"target": t, "probe": p}) for (t, p), v in items]

    def _obs_last_duration(self) -> list[Point]:
        with self._lock:
            items = list(self._last_duration.items())
        return [_o(v, {"target": t, "probe": p}) for (t, p), v in items]

    def _obs_quantiles(self) -> list[Point]:
        with self._lock:
            items = [(k, list(qs.items())) for k, qs in self._quantiles.items()]
        return [
            _o(v, {"target": t, "probe": p, "quantile": str(q)})
            for (t, p), qs in items for q, v in qs
        ]

    def _obs_check(self) -> list[Point]:
        with self._lock:
            items = list(self._check.items())
        return [
            _o(1 if status == s else 0, {"target": t, "probe": p, "status": s.value})
            for (t, p), status in items for s in STATUSES
        ]

    def _obs_target_health(self) -> list[Point]:
        with self._lock:
            # no result yet reads UNKNOWN, as on /metrics
            items = [
                (t, self._target_state.get(t, HealthState.UNKNOWN)) for t in self._targets
            ]
        return [
            _o(1 if state == s else 0, {"target": t, "state": s.value})
            for t, state in items for s in STATES
        ]

    def _obs_agent_health(self) -> list[Point]:
        with self._lock:
            state = self._agent_state or HealthState.UNKNOWN
        return [_o(1 if state == s else 0, {"state": s.value}) for s in STATES]

    def _obs_failover_active(self) -> list[Point]:
        with self._lock:
            items = [
                (t, a, self._failover_eps.get(t, FAILOVER_ENDPOINTS))
                for t, a in self._failover.items()
            ]
        return [
            _o(1 if active == ep else 0, {"target": t, "endpoint": ep})
            for t, active, eps in items for ep in eps
        ]

    def _obs_failover_endpoint_up(self) -> list[Point]:
        with self._lock:
            items = [(t, list(up.items())) for t, up in self._failover_up.items()]
        return [
            _o(1 if ok else 0, {"target": t, "endpoint": ep})
            for t, up in items for ep, ok in up
        ]

    def _obs_context_accepted(self) -> list[Point]:
        with self._lock:
            items = [(t, list(cx)) for (t, _p), cx in self._contexts.items()]
        return [
            _o(1 if ok else 0, {"target": t, "sop_class": sop, "transfer_syntax": ts})
            for t, cx in items for sop, ts, ok in cx
        ]

    def _obs_tls_earliest(self) -> list[Point]:
        with self._lock:
            items = list(self._tls.items())
        return [_o(v[1], {"target": t, "probe": p}) for (t, p), v in items]

    def _obs_tls_leaf(self) -> list[Point]:
        with self._lock:
            items = list(self._tls.items())
        return [_o(v[0], {"target": t, "probe": p}) for (t, p), v in items]

    def _obs_self_probe(self) -> list[Point]:
        with self._lock:
            v = self._self_probe
        return [] if v is None else [_o(v)]

    def _obs_slo_objective(self) -> list[Point]:
        with self._lock:
            items = [(k, o.ratios()) for k, o in self._slos.items()]
        return [
            _o(v, {"target": t, "probe": p, "slo": slo})
            for (t, p), ratios in items for slo, v in ratios.items()
        ]

    def set_maintenance(self, active: Mapping[str, bool]) -> None:
        with self._lock:
            self._maintenance.update(active)

    def set_target_settings(
        self, target: str, degraded_latency: float, cert_warning_seconds: float
    ) -> None:
        with self._lock:
            self._settings[target] = (degraded_latency, cert_warning_seconds)

    def _obs_maintenance(self) -> list[Point]:
        with self._lock:
            items = [(t, self._maintenance.get(t, False)) for t in self._targets]
        return [_o(1 if on else 0, {"target": t}) for t, on in items]

    def _obs_degraded_latency(self) -> list[Point]:
        with self._lock:
            items = [(t, v[0]) for t, v in self._settings.items() if t in self._targets]
        return [_o(v, {"target": t}) for t, v in items]

    def _obs_cert_warning(self) -> list[Point]:
        with self._lock:
            items = [(t, v[1]) for t, v in self._settings.items() if t in self._targets]
        return [_o(v, {"target": t}) for t, v in items]

    def _obs_targets_count(self) -> list[Point]:
        with self._lock:
            n = len(self._targets)
        return [_o(n)]

    # -- export --------------------------------------------------------------------------------

    def _points(self, key: str, kind: str, now: int) -> Iterator[bytes]:
        """One instrument's points, encoded SLICE series per hold of the lock (observe() runs
        in between), lazily: the export holds about one request's points at a time."""
        start = self._start_ns
        if kind == "gauge":  # _obs_<key> takes the lock for its copy
            yield from (number_point(a, 0, now, v) for a, v in getattr(self, "_obs_" + key)())
            return
        series: dict[Any, Any] = getattr(self, "_" + key)
        with self._lock:
            keys = list(series)
        third = "phase" if key == "phase" else _COUNTER_THIRD.get(key)
        encode: Callable[..., bytes] = expo_point if kind == "histogram" else number_point
        for i in range(0, len(keys), SLICE):
            with self._lock:  # counters and histograms are never deleted: every key is there
                out = [encode((*_tp(k[0], k[1]), kv(third, k[2])) if third else _tp(k[0], k[1]),
                              start, now, series[k]) for k in keys[i:i + SLICE]]
            yield from out

    def _metrics(self) -> Iterator[tuple[MetricHead, Iterator[bytes]]]:
        now = time.time_ns()
        for spec in INSTRUMENTS:
            # an instrument with no series is not sent (as the SDK did): wire.requests()
            yield self._heads[spec.key], self._points(spec.key, spec.kind, now)

    def export_once(self, budget: float | None = None) -> bool:
        """One export: the state now, in requests of at most MAX_EXPORT_BATCH points."""
        with self._export_lock:
            bodies = requests(self._resource, self._scope, self._metrics(), MAX_EXPORT_BATCH)
            return self.exporter.export(bodies, budget).name == "SUCCESS"

    def force_flush(self) -> bool:
        return self.export_once()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.interval):
            try:
                self.export_once()
            except Exception:  # noqa: BLE001 - the export thread must survive anything
                log.exception("OTLP export")

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
        self._stop.set()
        deadline = time.monotonic() + self.final_flush_bound
        try:
            # an export under way on the timer thread finishes first (bounded by its budget)
            if self._export_lock.acquire(timeout=self.settings.timeout):
                self._export_lock.release()
                # the last request starts in time to end within the bound
                self.export_once(budget=max(self.final_flush_bound - self.settings.timeout, 0.0))
        except Exception as e:  # noqa: BLE001 - stopping must go on
            log.warning("OTLP shutdown: %s", e)
        finally:
            left = max(deadline - time.monotonic(), 0.1)
            self.exporter.shutdown(timeout_millis=left * 1000.0)
