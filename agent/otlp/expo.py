"""Cumulative base-2 exponential histograms, a probe's in a few hundred bytes.

The OTLP ExponentialHistogram data model (opentelemetry-specification, data-model.md and
sdk.md "Base2 Exponential Bucket Histogram Aggregation"): a value v > 0 falls in bucket
index i at scale s where base**i < v <= base**(i+1), base = 2**(2**-s); the histogram starts
at MAX_SCALE and, when a value would make the span of populated indices exceed `max_size`,
lowers the scale by the fewest steps that make it fit (an index at scale s-c is the index at s
shifted right by c). The result is the same as the SDK's aggregation with max_size=160 fed the
same values (tests/test_otlp_wire.py compares them), at a fraction of the memory of the SDK's
per-series objects, previous-collection copies and locks: the histograms of one group (a probe's
run duration and its phases) are one object (Histograms) holding each histogram's integer
fields, one array of their float fields, and one array of the narrowest integer type that holds
every bucket count ('B', then 'H', 'I', 'Q' as a bucket outgrows it) with each histogram's
buckets in turn. An object per histogram, with a float or int object per field and an array of
its own, took ~1 KB more per (target, probe), 3 MB at 1,000 targets.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

MAX_SCALE = 20
WIDER = {"B": "H", "H": "I", "I": "Q"}
# 2**scale / ln(2) for scale > 0 (index_of), computed once instead of on every value
_LOG_FACTOR = tuple(math.ldexp(1.0 / math.log(2), s) for s in range(MAX_SCALE + 1))

# Histogram k's fields: its integers from INTS * k in Histograms, its floats from FLOATS * k in
# Histograms.floats. Its buckets are the LENGTH counts from START in Histograms.counts.
COUNT, ZERO_COUNT, SCALE, OFFSET, START, LENGTH = range(6)
INTS = 6
SUM, MIN, MAX = range(3)
FLOATS = 3
_EMPTY_INTS = array("q", (0, 0, MAX_SCALE, 0, 0, 0))
_EMPTY_FLOATS = array("d", (0.0, math.inf, -math.inf))

if TYPE_CHECKING:
    _Ints = array[int]
else:  # array is not subscriptable at run time
    _Ints = array


@dataclass(slots=True)
class ExpoPoint:
    """One histogram's fields as an export reads them."""

    count: int
    sum: float
    min: float
    max: float
    zero_count: int
    scale: int
    offset: int
    counts: array[int]  # the positive buckets [offset, offset + len(counts)), a copy


def index_of(value: float, scale: int) -> int:
    """Bucket index of value > 0 at `scale` (upper-inclusive buckets, as the spec requires)."""
    mantissa, exp = math.frexp(value)  # value = mantissa * 2**exp, 0.5 <= mantissa < 1
    if mantissa == 0.5:  # an exact power of two is the upper bound of the bucket below
        return ((exp - 1) << scale) - 1 if scale > 0 else ((exp - 2) >> -scale)
    if scale > 0:
        return math.floor(math.log(value) * _LOG_FACTOR[scale])
    return (exp - 1) >> -scale


class Histograms(_Ints):
    """Histograms 0 .. n-1 of one group: histogram k's integer fields are this array's INTS
    from INTS * k, its float fields the FLOATS of `floats` from FLOATS * k, its positive
    buckets [offset, offset + length) the `length` counts from `start` in `counts`."""

    __slots__ = ("floats", "counts")
    floats: array[float]
    counts: array[int]

    def __new__(cls, n: int = 0) -> Histograms:
        h = cast(Histograms, super().__new__(cls, "q", _EMPTY_INTS * n))  # all empty, at 0
        h.floats = _EMPTY_FLOATS * n
        h.counts = array("B")
        return h

    def add(self) -> int:
        """A new, empty histogram: its k."""
        k = len(self) // INTS
        self.extend(_EMPTY_INTS)
        self[INTS * k + START] = len(self.counts)
        self.floats.extend(_EMPTY_FLOATS)
        return k

    def point(self, k: int) -> ExpoPoint:
        b, f, start = INTS * k, FLOATS * k, self[INTS * k + START]
        return ExpoPoint(self[b + COUNT], self.floats[f + SUM], self.floats[f + MIN],
                         self.floats[f + MAX], self[b + ZERO_COUNT], self[b + SCALE],
                         self[b + OFFSET], self.counts[start:start + self[b + LENGTH]])

    def record(self, k: int, value: float, max_size: int) -> None:
        """Add value to histogram k."""
        b, f, floats = INTS * k, FLOATS * k, self.floats
        self[b + COUNT] += 1
        floats[f + SUM] += value
        if value < floats[f + MIN]:
            floats[f + MIN] = value
        if value > floats[f + MAX]:
            floats[f + MAX] = value
        if value <= 0.0:  # durations: 0 is the zero bucket (never negative)
            self[b + ZERO_COUNT] += 1
            return
        i = index_of(value, self[b + SCALE])
        offset, n = self[b + OFFSET], self[b + LENGTH]
        if offset <= i < offset + n:  # most values fall in a bucket the histogram has
            pos = self[b + START] + i - offset
            try:
                self.counts[pos] += 1
            except OverflowError:  # this bucket outgrew the type: widen the whole array
                self._widen()[pos] += 1
            return
        if not n:
            self[b + OFFSET] = i
            self._insert(k, 0, 1, 0)
            return
        lo, hi = (i, offset + n - 1) if i < offset else (offset, i)
        if hi - lo >= max_size:
            change = 0
            while hi - lo >= max_size:
                hi >>= 1
                lo >>= 1
                change += 1
            self._downscale(k, change)
            i >>= change
            offset, n = self[b + OFFSET], self[b + LENGTH]
            if offset <= i < offset + n:  # merged into a bucket it has
                pos = self[b + START] + i - offset
                try:
                    self.counts[pos] += 1
                except OverflowError:
                    self._widen()[pos] += 1
                return
        if i < offset:  # new buckets i .. offset - 1
            self._insert(k, 0, offset - i, 0)
            self[b + OFFSET] = i
        else:  # new buckets offset + n .. i
            self._insert(k, n, i - offset - n + 1, -1)

    def _widen(self) -> array[int]:
        self.counts = array(WIDER[self.counts.typecode], self.counts)
        return self.counts

    def _insert(self, k: int, at: int, m: int, one: int) -> None:
        """m buckets into histogram k, `at` buckets from its first: empty but the one at index
        `one` of them, which counts 1; the histograms after it move up."""
        b = INTS * k
        pos = self[b + START] + at
        counts = self.counts
        new = array(counts.typecode, bytes(m * counts.itemsize))
        new[one] = 1
        counts[pos:pos] = new
        self[b + LENGTH] += m
        for later in range(b + INTS + START, len(self), INTS):
            self[later] += m

    def _downscale(self, k: int, change: int) -> None:
        """Merge each 2**change neighbouring buckets of histogram k (scale - change)."""
        b = INTS * k
        offset, start, n = self[b + OFFSET], self[b + START], self[b + LENGTH]
        new_offset = offset >> change
        merged = [0] * (((offset + n - 1) >> change) - new_offset + 1)
        for j, c in enumerate(self.counts[start:start + n]):
            if c:
                merged[((offset + j) >> change) - new_offset] += c
        top = max(merged)
        while top >= 1 << 8 * self.counts.itemsize:
            self._widen()
        self.counts[start:start + n] = array(self.counts.typecode, merged)
        self[b + LENGTH] = len(merged)
        for later in range(b + INTS + START, len(self), INTS):
            self[later] -= n - len(merged)
        self[b + OFFSET] = new_offset
        self[b + SCALE] -= change
