"""A cumulative base-2 exponential histogram in a few hundred bytes.

The OTLP ExponentialHistogram data model (opentelemetry-specification, data-model.md and
sdk.md "Base2 Exponential Bucket Histogram Aggregation"): a value v > 0 falls in bucket
index i at scale s where base**i < v <= base**(i+1), base = 2**(2**-s); the histogram starts
at MAX_SCALE and, when a value would make the span of populated indices exceed `max_size`,
lowers the scale by the fewest steps that make it fit (an index at scale s-c is the index at s
shifted right by c). The result is the same as the SDK's aggregation with max_size=160 fed the
same values (tests/test_otlp_wire.py compares them), at a fraction of the memory: counts live
in one array of the narrowest integer type that holds them ('B', then 'H', 'I', 'Q' as a
bucket outgrows it) instead of the SDK's per-series objects, previous-collection copies and locks.
"""

from __future__ import annotations

import math
from array import array

MAX_SCALE = 20
WIDER = {"B": "H", "H": "I", "I": "Q"}


def _zeros(n: int, typecode: str) -> array[int]:
    return array(typecode, bytes(n * array(typecode).itemsize))


def index_of(value: float, scale: int) -> int:
    """Bucket index of value > 0 at `scale` (upper-inclusive buckets, as the spec requires)."""
    mantissa, exp = math.frexp(value)  # value = mantissa * 2**exp, 0.5 <= mantissa < 1
    if mantissa == 0.5:  # an exact power of two is the upper bound of the bucket below
        return ((exp - 1) << scale) - 1 if scale > 0 else ((exp - 2) >> -scale)
    if scale > 0:
        return math.floor(math.log(value) * math.ldexp(1.0 / math.log(2), scale))
    return (exp - 1) >> -scale


class ExpoHistogram:
    """count, sum, min, max, zero_count and positive buckets [offset, offset + len(counts))."""

    __slots__ = ("count", "sum", "min", "max", "zero_count", "scale", "offset", "counts")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.zero_count = 0
        self.scale = MAX_SCALE
        self.offset = 0
        self.counts = array("B")

    def record(self, value: float, max_size: int) -> None:
        self.count += 1
        self.sum += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if value <= 0.0:  # durations: 0 is the zero bucket (never negative)
            self.zero_count += 1
            return
        i = index_of(value, self.scale)
        counts = self.counts
        if not counts:
            self.offset = i
            counts.append(1)
            return
        lo, hi = min(i, self.offset), max(i, self.offset + len(counts) - 1)
        if hi - lo >= max_size:
            change = 0
            while hi - lo >= max_size:
                hi >>= 1
                lo >>= 1
                change += 1
            self._downscale(change)
            i >>= change
            counts = self.counts
        tc = counts.typecode
        if i < self.offset:
            counts[0:0] = _zeros(self.offset - i, tc)
            self.offset = i
        elif i >= self.offset + len(counts):
            counts.extend(_zeros(i - self.offset - len(counts) + 1, tc))
        try:
            counts[i - self.offset] += 1
        except OverflowError:  # this bucket outgrew the type: widen the whole array
            self.counts = array(WIDER[tc], counts)
            self.counts[i - self.offset] += 1

    def _downscale(self, change: int) -> None:
        """Merge each 2**change neighbouring buckets (scale - change)."""
        new_offset = self.offset >> change
        end = (self.offset + len(self.counts) - 1) >> change
        merged = _zeros(end - new_offset + 1, "Q")
        for j, c in enumerate(self.counts):
            if c:
                merged[((self.offset + j) >> change) - new_offset] += c
        top = max(merged)
        tc = next(t for t in "BHI" if top < 1 << (8 * array(t).itemsize)) if top < 1 << 32 else "Q"
        merged = array(tc, merged)
        self.counts, self.offset = merged, new_offset
        self.scale -= change
