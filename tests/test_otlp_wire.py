"""The hand-written OTLP encoding (agent.otlp.wire, agent.otlp.expo) against the SDK's: the same
results fed to OTLPExporter and to an SDK MeterProvider (base-2 exponential histograms of at
most 160 buckets, cumulative sums, as the exporter used before) must give the same data points
once both are parsed from the wire: histogram scale, offset, bucket counts, zero count, count,
sum, min, max; counter values; names, units, descriptions and attributes."""

from __future__ import annotations

import random
from typing import Any

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.sdk.metrics import Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View

from agent.config.schema import OTLPConfig
from agent.otlp import INSTRUMENTS, OTLPExporter, resolve_settings
from agent.otlp.expo import ExpoHistogram, index_of
from probes.base import ProbeResult, Reason
from tests.helpers.observe import info, observation
from tests.helpers.otlp_receiver import Received, points

PHASES = ("connect", "associate", "dimse", "release")


class Capture:
    """A RequestSender that keeps the requests (what would go on the wire)."""

    def __init__(self) -> None:
        self.sent: list[ExportMetricsServiceRequest] = []

    def send(self, body: bytes) -> MetricExportResult:
        self.sent.append(ExportMetricsServiceRequest.FromString(body))
        return MetricExportResult.SUCCESS

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def _hist(dp: Any) -> tuple:
    """Buckets without leading/trailing empty ones: after a cumulative merge the SDK sends its
    whole 160-bucket array, zeros included (the same histogram; ours sends only the span)."""
    counts, offset = list(dp.positive.bucket_counts), dp.positive.offset
    while counts and counts[-1] == 0:
        counts.pop()
    while counts and counts[0] == 0:
        counts.pop(0)
        offset += 1
    return (dp.count, round(dp.sum, 9), dp.min, dp.max, dp.scale, dp.zero_count, offset, counts)


def flat(reqs: list[ExportMetricsServiceRequest]) -> dict[tuple, Any]:
    out: dict[tuple, Any] = {}
    for p in points([Received(r, {}) for r in reqs]):
        key = (p.name, p.unit, p.metric.description, tuple(sorted(p.attributes.items())))
        assert key not in out, key
        if p.kind == "exponential_histogram":
            out[key] = (p.kind, _hist(p.point))
        else:
            out[key] = (p.kind, p.point.WhichOneof("value"), p.value)
    return out


def test_index_of_matches_the_sdk_mapping() -> None:
    from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.exponent_mapping import (  # noqa: E501
        ExponentMapping,
    )
    from opentelemetry.sdk.metrics._internal.exponential_histogram.mapping.logarithm_mapping import (  # noqa: E501
        LogarithmMapping,
    )

    rng = random.Random(3)
    values = [2.0 ** k for k in range(-20, 8)] + [rng.lognormvariate(-5, 3) for _ in range(3000)]
    for scale in (20, 12, 5, 1, 0, -1, -4, -10):
        m = LogarithmMapping(scale) if scale > 0 else ExponentMapping(scale)
        for v in values:
            assert index_of(v, scale) == m.map_to_index(v), (v, scale)


def test_export_content_equals_the_sdk_path() -> None:
    """120 targets x 2 probes, 40 runs each with latencies over 4 decades (forcing several
    downscales), some failures: every histogram and counter point equals the SDK's."""
    rng = random.Random(11)
    s = resolve_settings(OTLPConfig(endpoint="http://127.0.0.1:9", interval=3_600_000), {})
    assert s is not None
    cap = Capture()
    ours = OTLPExporter(s, metric_exporter=cap)
    reader = InMemoryMetricReader()
    sdk = MeterProvider(metric_readers=[reader], resource=ours.resource, views=[
        View(instrument_type=Histogram,
             aggregation=ExponentialBucketHistogramAggregation(max_size=160))])
    meter = sdk.get_meter("pacs-health-agent")
    spec = {i.key: i for i in INSTRUMENTS}

    def inst(key: str, create: Any) -> Any:
        return create(spec[key].name, unit=spec[key].unit, description=spec[key].help)

    duration = inst("duration", meter.create_histogram)
    phase = inst("phase", meter.create_histogram)
    runs = inst("runs", meter.create_counter)
    attempts = inst("attempts", meter.create_counter)
    failures = inst("failures", meter.create_counter)
    now = ProbeResult.now()
    probes = ["dicom_echo", "api_ping"]
    for i in range(120):
        t = f"pacs-{i:03d}"
        ours.add_target(info(t, probes))
        for p in probes:
            for res in ("success", "failure"):
                runs.add(0, {"target": t, "probe": p, "result": res})
            attempts.add(0, {"target": t, "probe": p})
    for _ in range(40):
        for i in range(120):
            t = f"pacs-{i:03d}"
            for p in probes:
                ok = rng.random() > 0.1
                ph = {n: rng.choice([0.0, 2.0 ** -7, rng.lognormvariate(-6, 2.5)])
                      for n in PHASES}
                d = sum(ph.values())
                r = ProbeResult(t, p, ok, None if ok else Reason.TIMEOUT, "", ph, d, now,
                                attempts=rng.choice([1, 1, 2]))
                ours.observe(observation(r))
                tp = {"target": t, "probe": p}
                runs.add(1, {**tp, "result": "success" if ok else "failure"})
                attempts.add(r.attempts, tp)
                if ok:
                    duration.record(d, tp)
                    for n, v in ph.items():
                        phase.record(v, {**tp, "phase": n})
                else:
                    failures.add(1, {**tp, "reason": "timeout"})
    assert ours.force_flush()
    sent = list(cap.sent)
    ours.shutdown()
    data = reader.get_metrics_data()
    assert data is not None
    theirs = flat([encode_metrics(data)])
    mine = flat(sent)
    compared = {k: v for k, v in mine.items() if k[0] in {n for n, *_ in theirs}}
    assert len(theirs) == 120 * 2 * (2 + 1 + 1 + len(PHASES)) + len(
        [k for k in theirs if k[0] == "pacs.probe.failures"])
    diff = [(k, compared.get(k), v) for k, v in theirs.items() if compared.get(k) != v]
    assert not diff, (len(diff), diff[:1])
    # the data forced downscaling, and requests stayed within the batch size
    scales = {v[1][4] for v in theirs.values() if v[0] == "exponential_histogram"}
    assert len(scales) >= 3 and max(scales) < 20
    assert all(sum(1 for _ in points([Received(r, {})])) <= 2000 for r in sent)


def test_expo_histogram_downscales_to_fit() -> None:
    h = ExpoHistogram()
    for v in (1e-6, 1e-3, 1.0, 100.0):
        h.record(v, 160)
    assert h.count == 4 and len(h.counts) <= 160 and sum(h.counts) == 4
    assert h.offset == index_of(1e-6, h.scale)
    assert h.offset + len(h.counts) - 1 == index_of(100.0, h.scale)


def test_expo_histogram_widens_a_full_bucket() -> None:
    h = ExpoHistogram()
    for _ in range(300):  # one bucket past 255: the byte array becomes 16-bit
        h.record(0.004, 160)
    h.record(0.5, 160)
    assert h.counts.typecode == "H" and sum(h.counts) == 301 and max(h.counts) == 300
    for v in (1e-7, 60.0):  # a downscale keeps the counts and the narrowest type
        h.record(v, 160)
    assert sum(h.counts) == 303 and h.counts.typecode == "H" and len(h.counts) <= 160
