"""OTLP metrics on the wire: ExportMetricsServiceRequest bytes written straight from our state.

The protobuf encoding of opentelemetry-proto's metrics.proto (field numbers below) is written
by hand because the SDK path costs too much at 1,000 targets: its collect builds a Python
object per data point, then its encoder a protobuf message per point and per attribute
(~3 s of CPU and ~150 MB for ~60,000 points; BENCHMARKS.md "OTLP cost"). Here an attribute
set is a tuple of pre-encoded KeyValue pieces (one per target name, cached), a point is a few
bytes joined, and a request holds at most `max_points` points so a collector's default 4 MiB
gRPC limit is never reached.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from agent.otlp.expo import ExpoPoint

CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE

_Q = struct.Struct("<Q")  # fixed64
_D = struct.Struct("<d")  # double
_q = struct.Struct("<q")  # sfixed64


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Packed bucket counts are most of an export's bytes: counts below 2**14 (one or two varint
# bytes) come from this table through map() + join, at C speed (~0.6 MB, built at import).
_SMALL = [varint(i) for i in range(1 << 14)]


def packed(counts: Iterable[int]) -> bytes:
    try:
        return b"".join(map(_SMALL.__getitem__, counts))
    except IndexError:
        return b"".join(varint(c) for c in counts)


def zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def any_value(v: Any) -> bytes:
    """AnyValue: string_value 1, bool_value 2, int_value 3, double_value 4."""
    if isinstance(v, bool):
        return b"\x10" + (b"\x01" if v else b"\x00")
    if isinstance(v, int):
        return b"\x18" + varint(v & 0xFFFFFFFFFFFFFFFF)
    if isinstance(v, float):
        return b"\x21" + _D.pack(v)
    return ld(1, str(v).encode())


@lru_cache(maxsize=65_536)
def kv(key: str, value: str) -> bytes:
    """KeyValue{key 1, value 2}, cached: target names, probes and enum values repeat."""
    return ld(1, key.encode()) + ld(2, ld(1, value.encode()))


Attrs = tuple[bytes, ...]  # encoded KeyValue messages


def target_probe(t: str, p: str) -> Attrs:
    return kv("target", t), kv("probe", p)


def _attr_fields(field: int, a: Attrs) -> bytes:
    tag = varint(field << 3 | 2)
    return b"".join(tag + varint(len(x)) + x for x in a)


def number_point(a: Attrs, start: int, now: int, value: float | int) -> bytes:
    """NumberDataPoint: attributes 7, start 2, time 3, as_double 4 | as_int 6 (ints stay ints,
    as the SDK sends them)."""
    v = (b"\x31" + _q.pack(int(value))) if isinstance(value, int) else (
        b"\x21" + _D.pack(value))
    start_f = (b"\x11" + _Q.pack(start)) if start else b""
    return _attr_fields(7, a) + start_f + b"\x19" + _Q.pack(now) + v


def expo_point(a: Attrs, start: int, now: int, h: ExpoPoint) -> bytes:
    """ExponentialHistogramDataPoint: attributes 1, start 2, time 3, count 4, sum 5, scale 6,
    zero_count 7, positive 8 (offset 1, bucket_counts 2 packed), negative 9, min 12, max 13."""
    counts = packed(h.counts)
    positive = b"\x08" + varint(zigzag(h.offset)) + (ld(2, counts) if counts else b"")
    out = [
        _attr_fields(1, a), b"\x11", _Q.pack(start), b"\x19", _Q.pack(now),
        b"\x21", _Q.pack(h.count), b"\x29", _D.pack(h.sum), b"\x30", varint(zigzag(h.scale)),
        b"\x39", _Q.pack(h.zero_count), ld(8, positive), b"\x4a\x00",
    ]
    if h.count:
        out += [b"\x61", _D.pack(h.min), b"\x69", _D.pack(h.max)]
    return b"".join(out)


_DATA = {  # kind → (Metric field, what follows the data points in it)
    "counter": (7, b"\x10" + varint(CUMULATIVE) + b"\x18\x01"),  # Sum: temporality, monotonic
    "histogram": (10, b"\x10" + varint(CUMULATIVE)),  # ExponentialHistogram: temporality
    "gauge": (5, b""),
}


@dataclass(frozen=True)
class MetricHead:
    """Metric name 1, description 2, unit 3 and its data kind: gauge 5, sum 7 (cumulative,
    monotonic), exponential_histogram 10 (cumulative)."""

    name: str
    description: str
    unit: str
    kind: str  # gauge | counter | histogram

    def frame(self, points_len: int) -> tuple[bytes, bytes]:
        """What goes before and after `points_len` bytes of data points (each an ld(1, point))
        to make them this metric, as ScopeMetrics.metrics (field 2)."""
        field, tail = _DATA[self.kind]
        head = ld(1, self.name.encode()) + ld(2, self.description.encode())
        if self.unit:
            head += ld(3, self.unit.encode())
        data_len = points_len + len(tail)
        head += varint(field << 3 | 2) + varint(data_len)
        return b"\x12" + varint(len(head) + data_len) + head, tail


def resource_bytes(attributes: Mapping[str, Any]) -> bytes:
    """Resource{attributes 1} as ResourceMetrics.resource (field 1)."""
    return ld(1, b"".join(ld(1, ld(1, k.encode()) + ld(2, any_value(v)))
                          for k, v in attributes.items()))


def scope_bytes(name: str, version: str) -> bytes:
    """InstrumentationScope{name 1, version 2} as ScopeMetrics.scope (field 1)."""
    return ld(1, ld(1, name.encode()) + ld(2, version.encode()))


def _length(n: int) -> bytes:
    return _SMALL[n] if n < len(_SMALL) else varint(n)


def requests(
    resource: bytes, scope: bytes, metrics: Iterable[tuple[MetricHead, Iterable[bytes]]],
    max_points: int,
) -> Iterator[tuple[bytes, int]]:
    """ExportMetricsServiceRequest bodies of at most `max_points` points each, with their point
    counts; a metric split across two requests repeats its head in both.

    Each point is framed straight into the request's buffer as it arrives and its metric's head
    inserted in front once its length is known: no list of up to max_points pending points, no
    framed copy of each and no copy of the body per level of nesting."""
    buf = bytearray()  # ScopeMetrics.metrics of the request under way
    size = 0  # its points

    def close(head: MetricHead, start: int) -> None:
        before, after = head.frame(len(buf) - start)
        buf[start:start] = before
        buf.extend(after)

    def request() -> bytes:
        sm = b"\x12" + _length(len(scope) + len(buf))  # ResourceMetrics.scope_metrics 2
        rm = resource + sm + scope  # ... + buf
        return b"\x0a" + _length(len(rm) + len(buf)) + rm + buf  # resource_metrics 1

    for head, points in metrics:
        start = len(buf)
        n = 0  # this metric's points in this request
        for p in points:
            buf.append(0x0A)  # data_points 1
            buf.extend(_length(len(p)))
            buf.extend(p)
            n += 1
            if size + n >= max_points:
                close(head, start)
                yield request(), size + n
                buf.clear()
                start = size = n = 0
        if n:
            close(head, start)
            size += n
    if size:
        yield request(), size
