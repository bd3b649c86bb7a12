"""OTLP push exporter: the Prometheus series as OpenTelemetry metrics, pushed over
gRPC or HTTP/protobuf to an OpenTelemetry Collector.

* Off unless configured: `agent.otlp.enabled: true`, `agent.otlp.endpoint`, or
  OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_METRICS_ENDPOINT. `enabled: false` wins over
  the environment. Nothing ever dials localhost:4317 by surprise.
* The config file wins over the environment; the standard OTEL_* variables fill the gaps
  (docs/otlp.md has the table).
* Exporting runs on the SDK's PeriodicExportingMetricReader thread, each request and each
  export bounded; a probe only records into SDK instruments. A down or slow collector never
  blocks probing or /metrics, nothing is queued across failed exports, and failures are counted in
  `pacs_otlp_export_failures_total` by a small delegating MetricExporter and logged at most once
  a minute. The gRPC exporter re-creates its channel after UNAVAILABLE, so export resumes without
  a restart when the collector comes back.
* Names are the dotted equivalents of the Prometheus names, chosen so that the Collector's
  Prometheus translation (unit suffix, `_total` for counters) gives back the /metrics name.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlparse

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
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.util.re import parse_env_headers

from agent import __version__
from agent.config.schema import OTLPConfig
from agent.evaluator import CheckState, CheckStatus, HealthState
from agent.slo import ProbeObjectives
from probes.base import ProbeResult, Reason

log = logging.getLogger("agent.otlp")

DEFAULT_SERVICE_NAME = "pacs-health-agent"
DEFAULT_INTERVAL = 60.0  # s, OTEL_METRIC_EXPORT_INTERVAL's default
DEFAULT_TIMEOUT = 10.0  # s, OTEL_EXPORTER_OTLP_TIMEOUT's default
PROTOCOLS = ("grpc", "http/protobuf")
LOG_EVERY = 60.0  # s: at most one "export failing" line a minute
# Per-instrument cardinality limit, raised from the SDK's 2000 on the reader (cardinality_limits):
# 1,000 targets x 5 probes x 12 failure reasons is 60,000 series, x ~8 phases 40,000.
# Beyond this limit the SDK folds further series into one `otel.metric.overflow=true` point.
CARDINALITY_LIMIT = 100_000
# Data points per export request (CountingExporter splits): keeps each request well under the
# 4 MiB a collector's gRPC receiver accepts by default (~100,000 points for 1,000 targets).
MAX_EXPORT_BATCH = 2_000
# Base-2 exponential histograms: 160 buckets (the SDK default) keep ~4 % relative error when one
# series spans 1 ms .. 60 s, finer when it spans less (the SDK picks the scale per series).
HISTOGRAM_MAX_SIZE = 160

STATES = (HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY, HealthState.UNKNOWN)
STATUSES = (CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL)
FAILOVER_ENDPOINTS = ("primary", "secondary")

# SDK loggers on the export path: while our wrapper exports, their records are captured (the last
# one goes into our once-a-minute line) instead of being printed on every failed interval.
_SDK_EXPORT_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder",
)


class OTLPSetupError(ValueError):
    """The OTLP settings cannot be used (bad env value, unreadable certificate). No secrets."""


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OTLPSettings:
    endpoint: str
    protocol: str
    headers: dict[str, str] = field(repr=False)
    interval: float  # seconds between exports
    timeout: float  # seconds, one request including the SDK exporter's retries; <= interval
    insecure: bool | None = None
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None


def display_url(url: str) -> str:
    """`url` without user:password@ (for log lines)."""
    if "@" not in url:
        return url
    scheme, sep, rest = url.rpartition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def _env(env: Mapping[str, str], *names: str) -> str | None:
    for n in names:
        v = env.get(n, "").strip()
        if v:
            return v
    return None


def _env_ms(env: Mapping[str, str], *names: str) -> float | None:
    """Milliseconds (the OpenTelemetry spec's unit for these variables) → seconds."""
    for n in names:
        raw = _env(env, n)
        if raw is None:
            continue
        try:
            v = float(raw) / 1000.0
        except ValueError:
            raise OTLPSetupError(f"{n} must be a number of milliseconds") from None
        if v <= 0:
            raise OTLPSetupError(f"{n} must be greater than zero")
        return v
    return None


def _env_bool(env: Mapping[str, str], *names: str) -> bool | None:
    raw = _env(env, *names)
    return None if raw is None else raw.lower() == "true"


def _http_url(base: str) -> str:
    """A base URL (collector:4318, http://collector:4318/prefix) → its /v1/metrics URL."""
    if "://" not in base:
        base = "http://" + base
    base = base.rstrip("/")
    return base if base.endswith("/v1/metrics") else base + "/v1/metrics"


def enabled_by(cfg: OTLPConfig, env: Mapping[str, str] = os.environ) -> bool:
    """OTLP runs only when configured: config enabled/endpoint or an OTLP endpoint env var."""
    if cfg.enabled is False:
        return False
    if cfg.enabled or cfg.endpoint:
        return True
    if (_env(env, "OTEL_SDK_DISABLED") or "").lower() == "true":
        return False
    if (_env(env, "OTEL_METRICS_EXPORTER") or "").lower() == "none":
        return False
    endpoint = _env(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return endpoint is not None


def resolve_settings(cfg: OTLPConfig, env: Mapping[str, str] = os.environ) -> OTLPSettings | None:
    """The effective OTLP settings (config first, then OTEL_* variables, then defaults), or None
    when OTLP is off."""
    if not enabled_by(cfg, env):
        return None
    protocol = cfg.protocol or _env(
        env, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
    ) or "grpc"
    if protocol not in PROTOCOLS:
        raise OTLPSetupError(
            f"OTLP protocol {protocol!r} is not supported (use one of {', '.join(PROTOCOLS)})"
        )
    signal_ep = _env(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    base_ep = _env(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol == "grpc":
        endpoint = cfg.endpoint or signal_ep or base_ep or "http://localhost:4317"
    elif cfg.endpoint:
        endpoint = _http_url(cfg.endpoint)
    elif signal_ep:
        endpoint = signal_ep  # the signal-specific URL is used as is (OTel spec)
    else:
        endpoint = _http_url(base_ep or "http://localhost:4318")

    headers = parse_env_headers(
        _env(env, "OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS") or "",
        liberal=True,
    )
    # gRPC metadata keys must be lower case (an "Authorization" key fails every export).
    headers = {k.lower(): v for k, v in headers.items()}
    headers.update({k.lower(): v for k, v in cfg.headers.items()})

    interval = cfg.interval or _env_ms(env, "OTEL_METRIC_EXPORT_INTERVAL") or DEFAULT_INTERVAL
    timeout = cfg.timeout or _env_ms(
        env, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"
    ) or DEFAULT_TIMEOUT
    reader_timeout = _env_ms(env, "OTEL_METRIC_EXPORT_TIMEOUT")
    # An export never outlasts the interval, so exports cannot back up behind a slow collector.
    timeout = min(timeout, interval, reader_timeout or timeout)

    insecure = cfg.insecure
    if insecure is None:
        insecure = _env_bool(
            env, "OTEL_EXPORTER_OTLP_METRICS_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"
        )
    certificate = cfg.certificate or _env(
        env, "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"
    )
    return OTLPSettings(
        endpoint=endpoint,
        protocol=protocol,
        headers=headers,
        interval=interval,
        timeout=timeout,
        insecure=insecure,
        certificate=certificate,
        client_key=_env(
            env, "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY"
        ),
        client_certificate=_env(
            env, "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ),
    )


# -- resource ------------------------------------------------------------------------------------

# Fixed once per process: the same id for every export until the process ends.
_INSTANCE_ID = f"{socket.gethostname()}-{os.getpid()}"

K8S_ENV = {
    "K8S_POD_NAME": "k8s.pod.name",
    "K8S_NAMESPACE_NAME": "k8s.namespace.name",
    "K8S_NODE_NAME": "k8s.node.name",
    "K8S_POD_UID": "k8s.pod.uid",
}


def build_resource(shard: str | None = None, env: Mapping[str, str] = os.environ) -> Resource:
    """service.name/version/instance.id and k8s.* (from the chart's downward-API variables).

    Precedence, lowest first: SDK defaults (telemetry.sdk.*), ours, OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME.
    """
    ours: dict[str, Any] = {
        "service.name": DEFAULT_SERVICE_NAME,
        "service.version": __version__,
        "service.instance.id": _INSTANCE_ID,
    }
    for var, key in K8S_ENV.items():
        if v := _env(env, var):
            ours[key] = v
    if shard:
        ours["pacs.agent.shard"] = shard
    # Resource.create lets `ours` override the environment; merging the environment again on
    # top restores the OTel precedence (the operator's variables win).
    return Resource.create(ours).merge(_env_resource(env))


def _env_resource(env: Mapping[str, str]) -> Resource:
    """What the SDK's OTELResourceDetector reads, from `env`."""
    attrs: dict[str, Any] = {}
    for item in (env.get("OTEL_RESOURCE_ATTRIBUTES") or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attrs[key.strip()] = unquote(value.strip())
    if name := _env(env, "OTEL_SERVICE_NAME"):
        attrs["service.name"] = name
    return Resource(attrs)


# -- the MetricExporter wrapper: count and rate-limit failures ----------------------------------

_capture = threading.local()


class _CaptureSDKLogs(logging.Filter):
    """While our wrapper exports on this thread, keep the SDK's messages instead of printing."""

    def filter(self, record: logging.LogRecord) -> bool:
        sink = getattr(_capture, "sink", None)
        if sink is None:
            return True
        try:
            sink.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a broken log record must not break an export
            sink.append(str(record.msg))
        return False


_CAPTURE_FILTER = _CaptureSDKLogs()
for _name in _SDK_EXPORT_LOGGERS:
    logging.getLogger(_name).addFilter(_CAPTURE_FILTER)


class FailureLog:
    """One "export failing" line at most every `every` seconds, one "resumed" line after it."""

    def __init__(self, endpoint: str, every: float = LOG_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.endpoint = endpoint
        self.every = every
        self.clock = clock
        self._last: float | None = None
        self._unreported = 0
        self._failing_reported = False
        self._lock = threading.Lock()

    def failure(self, why: str) -> bool:
        """Returns True if a line was logged."""
        with self._lock:
            self._unreported += 1
            now = self.clock()
            if self._last is not None and now - self._last < self.every:
                return False
            n, self._unreported, self._last = self._unreported, 0, now
            self._failing_reported = True
        log.warning(
            "OTLP export to %s failing (%d failed export(s) since the last report; next report in "
            "%.0f s at the earliest): %s", self.endpoint, n, self.every, why or "unknown error",
        )
        return True

    def success(self) -> bool:
        with self._lock:
            if not self._failing_reported:
                return False
            self._failing_reported = False
            self._unreported = 0
        log.info("OTLP export to %s resumed", self.endpoint)
        return True


def split_metrics(data: MetricsData, max_points: int) -> Iterator[MetricsData]:
    """`data` in pieces of at most `max_points` data points (a collector's gRPC server takes
    4 MiB messages by default; 1,000 targets make ~100,000 points)."""
    rms: list[ResourceMetrics] = []
    size = 0
    for rm in data.resource_metrics:
        sms: list[ScopeMetrics] = []
        for sm in rm.scope_metrics:
            metrics: list[Metric] = []
            for m in sm.metrics:
                # Any: each point type goes back into its own data class; mypy cannot follow
                # replace() across the union of Sum | Gauge | Histogram | ExponentialHistogram.
                points_of: Any = m.data
                pts = list(points_of.data_points)
                while pts:
                    take, pts = pts[: max_points - size], pts[max_points - size:]
                    metrics.append(replace(m, data=replace(points_of, data_points=take)))
                    size += len(take)
                    if size >= max_points:
                        sms.append(replace(sm, metrics=metrics))
                        rms.append(replace(rm, scope_metrics=sms))
                        yield MetricsData(resource_metrics=rms)
                        rms, sms, metrics, size = [], [], [], 0
            if metrics:
                sms.append(replace(sm, metrics=metrics))
        if sms:
            rms.append(replace(rm, scope_metrics=sms))
    if rms:
        yield MetricsData(resource_metrics=rms)


class CountingExporter(MetricExporter):
    """Delegates to the real OTLP MetricExporter, bounds each export and counts failures.

    The SDK's force_flush()/collect() report success whatever the exporter returned, so the
    result is inspected here; exceptions are caught (the reader would only log them). An export
    is sent in batches of at most `max_points`; the first failed batch ends it (the collector is
    down or refusing: no point hammering it), and no batch starts after `budget` seconds, so one
    export takes at most budget + one batch's timeout however slow the collector is. One failed
    export counts once.
    """

    def __init__(self, inner: MetricExporter, on_failure: Callable[[], None],
                 failure_log: FailureLog, *, budget: float = 60.0,
                 max_points: int = MAX_EXPORT_BATCH,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,  # noqa: SLF001
            preferred_aggregation=inner._preferred_aggregation,  # noqa: SLF001
        )
        self.inner = inner
        self.on_failure = on_failure
        self.failure_log = failure_log
        self.budget = budget
        self.max_points = max_points
        self.clock = clock
        self.exports = 0
        self.failures = 0
        self.requests = 0

    def _send(self, metrics_data: MetricsData, messages: list[str]) -> MetricExportResult:
        deadline = self.clock() + self.budget
        for batch in split_metrics(metrics_data, self.max_points):
            if self.clock() > deadline:
                messages.append(f"export not finished within {self.budget:.0f} s, rest dropped")
                return MetricExportResult.FAILURE
            self.requests += 1
            if self.inner.export(batch) is not MetricExportResult.SUCCESS:
                return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:
        messages: list[str] = []
        _capture.sink = messages
        try:
            result = self._send(metrics_data, messages)
        except Exception as e:  # noqa: BLE001 - counted and logged (rate-limited) below
            result = MetricExportResult.FAILURE
            messages.append(f"{type(e).__name__}: {e}")
        finally:
            _capture.sink = None
        self.exports += 1
        if result is MetricExportResult.SUCCESS:
            self.failure_log.success()
        else:
            self.failures += 1
            try:
                self.on_failure()
            finally:
                self.failure_log.failure(messages[-1] if messages else "")
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise OTLPSetupError(f"cannot read the OTLP {what} {path}: {e.strerror}") from None


def make_metric_exporter(s: OTLPSettings) -> MetricExporter:
    """The SDK's OTLP MetricExporter for these settings, every value passed explicitly."""
    if s.protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        scheme = urlparse(s.endpoint).scheme if "://" in s.endpoint else ""
        insecure = {"http": True, "https": False}.get(scheme, bool(s.insecure))
        credentials = None
        if not insecure:
            root = _read(s.certificate, "certificate") if s.certificate else None
            key = _read(s.client_key, "client key") if s.client_key else None
            chain = (_read(s.client_certificate, "client certificate")
                     if s.client_certificate else None)
            credentials = grpc.ssl_channel_credentials(root, key, chain)
        return GrpcExporter(
            endpoint=s.endpoint, insecure=insecure, credentials=credentials,
            headers=dict(s.headers), timeout=s.timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    for path, what in ((s.certificate, "certificate"), (s.client_key, "client key"),
                       (s.client_certificate, "client certificate")):
        if path:
            _read(path, what)
    return HttpExporter(
        endpoint=s.endpoint, certificate_file=s.certificate, client_key_file=s.client_key,
        client_certificate_file=s.client_certificate, headers=dict(s.headers),
        timeout=s.timeout,
    )


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


# Names: the Collector's Prometheus translation (dots → underscores, unit "s" → _seconds, "{...}"
# dropped, counters + _total) gives back the /metrics name. tests/test_otlp.py checks this.
INSTRUMENTS = (
    Instrument("duration", "pacs.probe.duration", "histogram", "s",
               "Successful runs' durations on the wire", "pacs_probe_duration_seconds"),
    Instrument("phase", "pacs.probe.phase.duration", "histogram", "s",
               "Successful runs' phase durations (connect, associate, dimse, ...)",
               "pacs_probe_phase_duration_seconds"),
    Instrument("runs", "pacs.probe.runs", "counter", "{run}", "Runs by result",
               "pacs_probe_runs_total"),
    Instrument("failures", "pacs.probe.failures", "counter", "{failure}", "Failed runs by reason",
               "pacs_probe_failures_total"),
    Instrument("attempts", "pacs.probe.attempts", "counter", "{attempt}",
               "Attempts including retries", "pacs_probe_attempts_total"),
    Instrument("out_of_range", "pacs.latency.out_of_range", "counter", "{measurement}",
               "Latencies outside the HDR range, clamped", "pacs_latency_out_of_range_total"),
    Instrument("success", "probe.success", "gauge", "",
               "1 if the last run succeeded (blackbox style)", "probe_success"),
    Instrument("last_duration", "probe.duration", "gauge", "s",
               "Wall time of the last run on the wire (blackbox style)", "probe_duration_seconds"),
    Instrument("quantiles", "pacs.probe.latency", "gauge", "s",
               "HDR quantiles over the sliding window", "pacs_probe_latency_seconds"),
    Instrument("check", "pacs.check.status", "gauge", "{status}",
               "1 for the check's current status", "pacs_check_status"),
    Instrument("target_health", "pacs.target.health", "gauge", "{state}",
               "1 for the target's current state", "pacs_target_health"),
    Instrument("agent_health", "pacs.agent.health", "gauge", "{state}",
               "1 for the worst target state", "pacs_agent_health"),
    Instrument("failover_active", "pacs.failover.active", "gauge", "{endpoint}",
               "1 for the endpoint currently serving", "pacs_failover_active"),
    Instrument("failover_endpoint_up", "pacs.failover.endpoint.up", "gauge", "{endpoint}",
               "1 if the failover endpoint answered in the last run", "pacs_failover_endpoint_up"),
    Instrument("dicom_status", "pacs.probe.dicom_status", "counter", "{run}",
               "Failed runs by DICOM status or rejection", "pacs_probe_dicom_status_total"),
    Instrument("context_accepted", "pacs.dicom.context.accepted", "gauge", "",
               "1 if the PACS accepted the SOP class with the transfer syntax",
               "pacs_dicom_context_accepted"),
    Instrument("tls_earliest", "probe.ssl_earliest_cert_expiry", "gauge", "",
               "Earliest certificate expiry (unix time, seconds)",
               "probe_ssl_earliest_cert_expiry"),
    Instrument("tls_leaf", "pacs.tls.cert.not_after_timestamp", "gauge", "s",
               "Leaf certificate expiry (unix time)", "pacs_tls_cert_not_after_timestamp_seconds"),
    Instrument("self_probe", "pacs.agent.self_probe.overhead", "gauge", "s",
               "Reported duration of a C-ECHO to the agent's own loopback SCP",
               "pacs_agent_self_probe_overhead_seconds"),
    Instrument("targets_count", "pacs.agent.targets", "gauge", "{target}",
               "Targets this agent probes", "pacs_agent_targets"),
    Instrument("slo_objective", "pacs.slo.objective", "gauge", "1",
               "Service-level objective (0.999 for 99.9 %)", "pacs_slo_objective_ratio"),
    Instrument("slow_runs", "pacs.probe.slow_runs", "counter", "{run}",
               "Successful runs over the latency SLO threshold", "pacs_probe_slow_runs_total"),
    Instrument("maintenance", "pacs.target.maintenance", "gauge", "",
               "1 while the target is in a maintenance window", "pacs_target_maintenance"),
    Instrument("degraded_latency", "pacs.target.degraded_latency", "gauge", "s",
               "The target's degradedLatency", "pacs_target_degraded_latency_seconds"),
    Instrument("cert_warning", "pacs.target.cert_expiry_warning", "gauge", "s",
               "The target's certExpiryWarningDays, in seconds",
               "pacs_target_cert_expiry_warning_seconds"),
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
        self._failover_eps: dict[str, tuple[str, ...]] = {}  # target → its failover node names
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
        # Counters start at 0 so rate() works from the first run (failures by reason are created
        # when they happen: 12 reasons x every probe would be most of an export's points).
        for p in probes:
            for res in ("success", "failure"):
                self.runs.add(0, {"target": target, "probe": p, "result": res})
            self.attempts.add(0, {"target": target, "probe": p})
            if slos and p in slos and slos[p].latency_threshold is not None:
                self.slow_runs.add(0, {"target": target, "probe": p})

    def remove_target(self, target: str) -> None:
        """Its gauges stop at once; the SDK cannot delete counter/histogram series, which keep
        their last value until the agent restarts (bounded by CARDINALITY_LIMIT)."""
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
            self._quantiles[(t, p)] = dict(quantiles)
            self._check[(t, p)] = check.status
            self._target_state[t] = target_state
            self._agent_state = agent_state
            if r.tls is not None:
                self._tls[(t, p)] = (r.tls.leaf_not_after, r.tls.earliest_not_after)
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
                        (sop, ts, False) for sop, ts, _ in self._contexts.get((t, p), ())
                    )
                self._contexts[(t, p)] = list(contexts)

    def set_self_probe_overhead(self, seconds: float) -> None:
        with self._lock:
            self._self_probe = seconds

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
            items = [
                (t, a, self._failover_eps.get(t, FAILOVER_ENDPOINTS))
                for t, a in self._failover.items()
            ]
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

    def set_maintenance(self, active: Mapping[str, bool]) -> None:
        with self._lock:
            self._maintenance.update(active)

    def set_target_settings(
        self, target: str, degraded_latency: float, cert_warning_seconds: float
    ) -> None:
        with self._lock:
            self._settings[target] = (degraded_latency, cert_warning_seconds)

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


def otlp_from_config(
    cfg: OTLPConfig, *, on_failure: Callable[[], None], shard: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> OTLPExporter | None:
    """The OTLP exporter when configured, else None. Raises OTLPSetupError on unusable settings."""
    settings = resolve_settings(cfg, env)
    if settings is None:
        return None
    return OTLPExporter(settings, on_failure=on_failure, shard=shard)


__all__ = [
    "CARDINALITY_LIMIT",
    "CountingExporter",
    "INSTRUMENTS",
    "FailureLog",
    "OTLPExporter",
    "OTLPSettings",
    "OTLPSetupError",
    "build_resource",
    "enabled_by",
    "otlp_from_config",
    "resolve_settings",
]
