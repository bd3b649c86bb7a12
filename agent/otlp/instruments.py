"""OTLPExporter: the pipeline's Exporter, its series kept in our own compact state
(agent.otlp.series) and written as OTLP requests each interval (agent.otlp.wire), instruments
from the catalogue.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from opentelemetry.sdk.resources import Resource

from agent import __version__
from agent.metrics_catalogue import OTLP_FAMILIES
from agent.otlp.delivery import (
    MAX_EXPORT_BATCH,
    CountingExporter,
    FailureLog,
    RequestSender,
    make_metric_exporter,
)
from agent.otlp.resource import build_resource
from agent.otlp.series import SeriesState
from agent.otlp.settings import OTLPSettings, display_url
from agent.otlp.wire import (
    MetricHead,
    expo_point,
    number_point,
    requests,
    resource_bytes,
    scope_bytes,
)
from agent.tuning import release_free_heap

log = logging.getLogger("agent.otlp")

# Series per instrument exported without folding (1,000 targets x 5 probes x 12 reasons is
# 60,000); nothing is folded at all now: attribute sets are targets x probes x bounded enums.
CARDINALITY_LIMIT = 100_000
SLICE = 100  # rows (records, targets) encoded per hold of the lock at export

@dataclass(frozen=True)
class Instrument:
    key: str  # its rows' reader: SeriesState._<key> (counter, histogram) or obs_<key> (gauge)
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


class OTLPExporter(SeriesState):
    """The pipeline's Exporter protocol (agent/pipeline.py: add_target, remove_target, observe,
    event, from SeriesState); exports every settings.interval on its own thread, on
    force_flush() and a last time on shutdown()."""

    def __init__(
        self,
        settings: OTLPSettings,
        *,
        on_failure: Callable[[], None] = lambda: None,
        shard: str | None = None,
        resource: Resource | None = None,
        metric_exporter: RequestSender | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.resource = resource or build_resource(shard)
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

    # -- export --------------------------------------------------------------------------------

    def _points(self, key: str, kind: str, now: int) -> Iterator[bytes]:
        """One instrument's points, encoded SLICE rows per hold of the lock (observe() runs in
        between), lazily: wire.requests() frames each into the request as it comes, so an
        export holds one slice of points at a time."""
        start = 0 if kind == "gauge" else self._start_ns  # gauges have no start time
        encode: Callable[..., bytes] = expo_point if kind == "histogram" else number_point
        rows, read = self.rows(key, kind)
        for i in range(0, len(rows), SLICE):
            with self._lock:
                out = [encode(a, start, now, v) for a, v in read(rows[i:i + SLICE])]
            yield from out

    def _metrics(self) -> Iterator[tuple[MetricHead, Iterator[bytes]]]:
        now = time.time_ns()
        for spec in INSTRUMENTS:
            # an instrument with no series is not sent (as the SDK did): wire.requests()
            yield self._heads[spec.key], self._points(spec.key, spec.kind, now)

    def export_once(self, budget: float | None = None) -> bool:
        """One export: the state now, in requests of at most MAX_EXPORT_BATCH points."""
        with self._export_lock:
            try:
                bodies = requests(self._resource, self._scope, self._metrics(), MAX_EXPORT_BATCH)
                return self.exporter.export(bodies, budget).name == "SUCCESS"
            finally:
                # the requests are garbage now; glibc would keep their pages (~6 MB at 1,000
                # targets) resident until the next export reuses them
                release_free_heap()

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
