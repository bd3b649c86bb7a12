"""Delivery: the SDK MetricExporter for the settings, wrapped to bound each export, split it
into requests a collector accepts, count failures and log them at most once a minute."""


from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlparse

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.sdk.metrics.export import MetricExportResult

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


class RequestSender(Protocol):
    """An SDK OTLP exporter that sends an ExportMetricsServiceRequest we built (wire.py), as
    the serialized bytes wire.py made: parsing them into a protobuf message only for the
    exporter to serialize it again cost a copy of every request in memory and CPU."""

    def send(self, body: bytes) -> MetricExportResult: ...

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None: ...


class CountingExporter:
    """Sends one export (a sequence of prebuilt requests), bounds it and counts failures.

    An export is a series of requests of at most MAX_EXPORT_BATCH points; the first failed
    request ends it (the collector is down or refusing: no point hammering it), and no request
    but the first starts after `budget` seconds, so one export takes at most budget + one
    request's timeout however slow the collector is. Exceptions are caught. One failed export
    counts once.
    """

    def __init__(self, inner: RequestSender, on_failure: Callable[[], None],
                 failure_log: FailureLog, *, budget: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 capture: SDKLogCapture | None = None) -> None:
        self.inner = inner
        self.on_failure = on_failure
        self.failure_log = failure_log
        self.budget = budget
        self.clock = clock
        self.capture = capture or install_sdk_log_capture()
        self.exports = 0
        self.failures = 0
        self.requests = 0

    def _send(self, bodies: Iterable[tuple[bytes, int]], messages: list[str],
              budget: float) -> MetricExportResult:
        deadline = self.clock() + budget
        for n, (body, _points) in enumerate(bodies):
            if n and self.clock() > deadline:
                messages.append(f"export not finished within {budget:.0f} s, rest dropped")
                return MetricExportResult.FAILURE
            self.requests += 1
            if self.inner.send(body) is not MetricExportResult.SUCCESS:
                return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def export(self, bodies: Iterable[tuple[bytes, int]],
               budget: float | None = None) -> MetricExportResult:
        with self.capture.capturing() as messages:
            try:
                result = self._send(bodies, messages, self.budget if budget is None else budget)
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

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis)


class _Serialized:
    """What the HTTP exporter's _export_batch() reads of a request: its bytes, and the
    points to count for the SDK's self-metrics (off; 0 as the gRPC sender counts)."""

    resource_metrics = ()

    def __init__(self, body: bytes) -> None:
        self._body = body

    def SerializeToString(self) -> bytes:  # noqa: N802 - protobuf's name
        return self._body


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise OTLPSetupError(f"cannot read the OTLP {what} {path}: {e.strerror}") from None


def make_metric_exporter(s: OTLPSettings) -> RequestSender:
    """The SDK's OTLP exporter for these settings (every value passed explicitly), taught to
    send a request built by agent.otlp.wire.

    Transport, TLS, headers, retries with backoff, the gRPC channel's re-creation after
    UNAVAILABLE and the HTTP client stay the SDK's (opentelemetry-exporter-otlp-proto-grpc
    exporter.py OTLPExporterMixin._export, -proto-http metric_exporter _export_batch, 1.45.2,
    pinned); only its encoding of SDK MetricsData is bypassed. _export() asks _translate_data()
    for the request and _count_data() for the SDK's own self-metrics (off unless
    OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED); the HTTP exporter's _export_batch() takes a
    request as it is. tests/test_otlp.py sends through both against real receivers."""
    if s.protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as GrpcExporter,
        )

        class RawStub:
            """MetricsServiceStub whose Export takes the request already serialized (the
            exporter builds its client from `_stub`, again after UNAVAILABLE)."""

            def __init__(self, channel: grpc.Channel) -> None:
                self.Export = channel.unary_unary(  # noqa: N815 - the stub's method name
                    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                    request_serializer=bytes,  # the identity for bytes: no copy
                    response_deserializer=ExportMetricsServiceResponse.FromString,
                )

        class GrpcSender(GrpcExporter):
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(**kwargs)
                self._stub = RawStub
                self._client = RawStub(self._channel)  # type: ignore[assignment,arg-type]

            def _translate_data(self, data: Any) -> Any:
                return data  # the serialized ExportMetricsServiceRequest

            def _count_data(self, data: Any) -> int:
                return 0  # only feeds the SDK's self-metrics, which are off

            def send(self, body: bytes) -> MetricExportResult:
                return self._export(body)  # type: ignore[arg-type]

        scheme = urlparse(s.endpoint).scheme if "://" in s.endpoint else ""
        insecure = {"http": True, "https": False}.get(scheme, bool(s.insecure))
        credentials = None
        if not insecure:
            root = _read(s.certificate, "certificate") if s.certificate else None
            key = _read(s.client_key, "client key") if s.client_key else None
            chain = (_read(s.client_certificate, "client certificate")
                     if s.client_certificate else None)
            credentials = grpc.ssl_channel_credentials(root, key, chain)
        return GrpcSender(
            endpoint=s.endpoint, insecure=insecure, credentials=credentials,
            headers=dict(s.headers), timeout=s.timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpExporter,
    )

    class HttpSender(HttpExporter):
        def send(self, body: bytes) -> MetricExportResult:
            if self._shutdown:
                return MetricExportResult.FAILURE
            return self._export_batch(_Serialized(body))  # type: ignore[arg-type]

    for path, what in ((s.certificate, "certificate"), (s.client_key, "client key"),
                       (s.client_certificate, "client certificate")):
        if path:
            _read(path, what)
    return HttpSender(
        endpoint=s.endpoint, certificate_file=s.certificate, client_key_file=s.client_key,
        client_certificate_file=s.client_certificate, headers=dict(s.headers),
        timeout=s.timeout,
    )
