"""Delivery: the SDK MetricExporter for the settings, wrapped to bound each export, split it
into requests a collector accepts, count failures and log them at most once a minute."""


from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import urlparse

from opentelemetry.sdk.metrics.export import (
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)

from agent.otlp.settings import OTLPSettings, OTLPSetupError

log = logging.getLogger("agent.otlp")

LOG_EVERY = 60.0  # s: at most one "export failing" line a minute

# Data points per export request (CountingExporter splits): keeps each request well under the
# 4 MiB a collector's gRPC receiver accepts by default (~100,000 points for 1,000 targets).
MAX_EXPORT_BATCH = 2_000

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



# -- the MetricExporter wrapper: count and rate-limit failures ----------------------------------

class SDKLogCapture(logging.Filter):
    """While our wrapper exports on a thread, keep the SDK's messages instead of printing them."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        sink = getattr(self._local, "sink", None)
        if sink is None:
            return True
        try:
            sink.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a broken log record must not break an export
            sink.append(str(record.msg))
        return False

    @contextmanager
    def capturing(self) -> Iterator[list[str]]:
        messages: list[str] = []
        self._local.sink = messages
        try:
            yield messages
        finally:
            self._local.sink = None


_installed: SDKLogCapture | None = None
_install_lock = threading.Lock()


def install_sdk_log_capture() -> SDKLogCapture:
    """Put the capture filter on the SDK's export loggers, once per process: done when an OTLP
    exporter is built (never at import, so importing agent.otlp leaves logging untouched)."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = SDKLogCapture()
            for name in _SDK_EXPORT_LOGGERS:
                logging.getLogger(name).addFilter(_installed)
        return _installed


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
                 clock: Callable[[], float] = time.monotonic,
                 capture: SDKLogCapture | None = None) -> None:
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
        self.capture = capture or install_sdk_log_capture()
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
        with self.capture.capturing() as messages:
            try:
                result = self._send(metrics_data, messages)
            except Exception as e:  # noqa: BLE001 - counted and logged (rate-limited) below
                result = MetricExportResult.FAILURE
                messages.append(f"{type(e).__name__}: {e}")
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


