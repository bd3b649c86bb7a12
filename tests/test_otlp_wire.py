"""The hand-written OTLP encoding (agent.otlp.wire, agent.otlp.expo) against the SDK's: the same
results fed to OTLPExporter and to an SDK MeterProvider (base-2 exponential histograms of at
most 160 buckets, cumulative sums, as the exporter used before) must give the same data points
once both are parsed from the wire: histogram scale, offset, bucket counts, zero count, count,
sum, min, max; counter values; names, units, descriptions and attributes. Also: the requests
equal the plain nested encoding byte for byte, the histograms of a group do not disturb each
other, and a removed target's series end as agent.otlp.series documents."""

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
from agent.evaluator import CheckStatus
from agent.otlp import INSTRUMENTS, OTLPExporter, resolve_settings
from agent.otlp.expo import Histograms, index_of
from agent.otlp.wire import MetricHead, kv, ld, number_point, requests
from agent.slo import ProbeObjectives
from probes.base import Facts, ProbeResult, Reason, TLSInfo
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
    h = Histograms(1)
    for v in (1e-6, 1e-3, 1.0, 100.0):
        h.record(0, v, 160)
    p = h.point(0)
    assert p.count == 4 and len(p.counts) <= 160 and sum(p.counts) == 4
    assert p.offset == index_of(1e-6, p.scale)
    assert p.offset + len(p.counts) - 1 == index_of(100.0, p.scale)


def test_expo_histogram_widens_a_full_bucket() -> None:
    h = Histograms(1)
    for _ in range(300):  # one bucket past 255: the byte array becomes 16-bit
        h.record(0, 0.004, 160)
    h.record(0, 0.5, 160)
    p = h.point(0)
    assert h.counts.typecode == "H" and sum(p.counts) == 301 and max(p.counts) == 300
    for v in (1e-7, 60.0):  # a downscale keeps the counts and the type
        h.record(0, v, 160)
    p = h.point(0)
    assert sum(p.counts) == 303 and h.counts.typecode == "H" and len(p.counts) <= 160


def test_histograms_of_a_group_do_not_disturb_each_other() -> None:
    """A group's histograms share their arrays (each one's buckets in turn): fed interleaved,
    with new buckets on both sides, downscales, a bucket widening the whole group and one added
    later, each equals the same histogram kept alone."""
    rng = random.Random(5)
    spreads = [(-6.0, 0.3), (-5.0, 2.5), (-2.0, 0.05), (-7.0, 1.0)]
    group, alone = Histograms(3), [Histograms(1) for _ in spreads]
    for n in range(1200):
        if n == 300:
            assert group.add() == 3
        for k, (mu, sigma) in enumerate(spreads[:3 if n < 300 else 4]):
            v = 0.0 if rng.random() < 0.05 else rng.lognormvariate(mu, sigma)
            if k == 2 and n < 400:
                v = 0.125  # one bucket past 255 (an exact power of two: the bucket below)
            group.record(k, v, 160)
            alone[k].record(0, v, 160)
    assert group.counts.typecode == "H"
    for k, h in enumerate(alone):
        mine, theirs = group.point(k), h.point(0)
        assert list(mine.counts) == list(theirs.counts)
        mine.counts = theirs.counts = mine.counts[:0]
        assert mine == theirs and mine.scale < 20


def _nested_requests(
    resource: bytes, scope: bytes, metrics: list[tuple[MetricHead, list[bytes]]], max_points: int
) -> list[tuple[bytes, int]]:
    """requests() as plain nested length-delimited fields: each metric's points joined, wrapped
    in its data (gauge 5, sum 7, exponential_histogram 10) and head, split at max_points."""
    tails = {"gauge": (5, b""), "counter": (7, b"\x10\x02\x18\x01"), "histogram": (10, b"\x10\x02")}

    def metric(head: MetricHead, pts: list[bytes]) -> bytes:
        field, tail = tails[head.kind]
        h = ld(1, head.name.encode()) + ld(2, head.description.encode())
        if head.unit:
            h += ld(3, head.unit.encode())
        return ld(2, h + ld(field, b"".join(ld(1, p) for p in pts) + tail))

    out: list[tuple[bytes, int]] = []
    parts: list[bytes] = []
    size = 0
    for head, pts in metrics:
        pending: list[bytes] = []
        for p in pts:
            pending.append(p)
            if size + len(pending) >= max_points:
                parts.append(metric(head, pending))
                out.append((ld(1, resource + ld(2, scope + b"".join(parts))), size + len(pending)))
                parts, pending, size = [], [], 0
        if pending:
            parts.append(metric(head, pending))
            size += len(pending)
    if parts:
        out.append((ld(1, resource + ld(2, scope + b"".join(parts))), size))
    return out


def test_requests_equal_the_nested_encoding() -> None:
    """The bytes requests() frames point by point into one buffer per request equal the nested
    encoding, split at every batch size (a metric split across requests repeats its head), with
    points whose length takes one, two or three varint bytes, and parse as the same messages."""
    rng = random.Random(8)
    resource, scope = ld(1, ld(1, kv("service.name", "x"))), ld(1, ld(1, b"pacs-health-agent"))

    def pt(size: int) -> bytes:
        return number_point((kv("target", "t" * size),), 0, 1_700_000_000_000_000_000,
                            rng.choice([rng.random(), rng.randint(0, 10**6)]))

    metrics: list[tuple[MetricHead, list[bytes]]] = []
    for i in range(40):
        kind = rng.choice(["gauge", "counter", "histogram"])
        head = MetricHead(f"m.{i}", "d" * rng.choice([0, 5, 200]), rng.choice(["", "s"]), kind)
        n = rng.choice([0, 0, 1, 2, 3, 50, 700])
        metrics.append((head, [pt(rng.choice([1, 90, 100, 120, 20_000])) for _ in range(n)]))
    for max_points in (1, 2, 3, 7, 100, 2000, 10**6):
        mine = list(requests(resource, scope, iter((h, iter(p)) for h, p in metrics), max_points))
        theirs = _nested_requests(resource, scope, metrics, max_points)
        assert [n for _, n in mine] == [n for _, n in theirs], max_points
        assert all(n <= max_points for _, n in mine)
        assert [b for b, _ in mine] == [b for b, _ in theirs], max_points
    for (body, n), (ref, _) in zip(mine[:3], theirs[:3], strict=True):
        parsed = ExportMetricsServiceRequest.FromString(body)
        assert parsed == ExportMetricsServiceRequest.FromString(ref)
        assert n == sum(len(getattr(m, m.WhichOneof("data")).data_points)
                        for m in parsed.resource_metrics[0].scope_metrics[0].metrics)


def test_removed_target_keeps_its_cumulative_series() -> None:
    """Removal: every gauge of the target stops at once; its counters and histograms keep
    their last value (no reset a collector would see) until the agent restarts, and resume
    from it if the target comes back."""
    s = resolve_settings(OTLPConfig(endpoint="http://127.0.0.1:9", interval=3_600_000), {})
    assert s is not None
    cap = Capture()
    ex = OTLPExporter(s, metric_exporter=cap)
    slo = {"dicom_echo": ProbeObjectives(0.999, 0.99, 0.001)}
    declared = {"dicom_echo": Facts(contexts=(("1.2", "1.2.3", False),))}
    now = ProbeResult.now()
    for t in ("keep", "gone"):
        ex.add_target(info(t, ["dicom_echo", "api_ping"], slos=slo, declared=declared))
        ex.observe(observation(ProbeResult(
            t, "dicom_echo", True, None, "", {"connect": 0.001, "dimse": 0.002}, 0.003, now,
            tls=TLSInfo(2e9, 1.9e9)), {0.5: 0.003}, status=CheckStatus.WARN, out_of_range=1))
        ex.observe(observation(ProbeResult(
            t, "api_ping", False, Reason.DIMSE_STATUS, "", {}, 0.5, now,
            facts=Facts(dicom_status="0xa700"))))

    def export() -> dict[str, dict[tuple, Any]]:
        cap.sent.clear()
        assert ex.force_flush()
        out: dict[str, dict[tuple, Any]] = {}
        for (name, _u, _d, a), v in flat(cap.sent).items():
            out.setdefault(name, {})[a] = v
        return out

    before = export()
    ex.remove_target("gone")
    ex.observe(observation(ProbeResult("gone", "dicom_echo", True, None, "", {}, 0.1, now)))
    after = export()
    cumulative = {i.name for i in INSTRUMENTS if i.kind != "gauge"}
    for name in set(before) | set(after):
        was = {a: v for a, v in before.get(name, {}).items() if ("target", "gone") in a}
        now_ = {a: v for a, v in after.get(name, {}).items() if ("target", "gone") in a}
        if name in cumulative:
            assert now_ == was and was, name
        else:
            assert not now_, name
        kept = {a: v for a, v in after.get(name, {}).items() if ("target", "keep") in a}
        assert kept == {a: v for a, v in before[name].items() if ("target", "keep") in a}, name
    assert {n for n in cumulative if any(("target", "gone") in a for a in before.get(n, {}))} == (
        cumulative), "the test covers every cumulative instrument"

    ex.add_target(info("gone", ["dicom_echo"]))
    ex.observe(observation(ProbeResult("gone", "dicom_echo", True, None, "", {}, 0.002, now)))
    back = export()
    ok = (("probe", "dicom_echo"), ("result", "success"), ("target", "gone"))
    assert before["pacs.probe.runs"][ok][2] == 1 and back["pacs.probe.runs"][ok][2] == 2
    ex.shutdown()
