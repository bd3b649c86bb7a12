"""Latency recorder: HDR histograms per (target, probe) over a sliding window.

The window is split into `buckets` sub-windows that rotate; quantiles cover the live sub-windows.
Bucketing (value → index → value, 2 significant figures, i.e. within 1 %) is hdrhistogram's own.
Counts are kept sparse rather than in the library's dense array: a dense 2-figure histogram over
1 µs..120 s is 2,688 counters (11.7 KB) and its percentile query is a Python loop over all of
them; with 1,000 targets × 3 probes × 5 sub-windows that is 176 MB and ~1 ms a query. A probe
running every 30 s puts ~10 values in a 5-minute window: one integer each (sub-window, bucket,
count) in one array per window, ~80 bytes.
Quantiles are computed when a value is recorded (once per run) and cached, so a scrape reads them.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import accumulate

from hdrh.histogram import HdrHistogram

from probes.base import ProbeResult

LOWEST_US = 1
HIGHEST_US = 120_000_000  # 120 s: longer than any sane probe deadline
SIGNIFICANT_FIGURES = 2
QUANTILES = (0.5, 0.95, 0.99)  # sorted: a window caches their values in this order
assert QUANTILES == tuple(sorted(QUANTILES))

# One histogram is used only for its bucket arithmetic (pure functions of the fixed parameters).
_TEMPLATE = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES, word_size=4)
# hdrhistogram's index arithmetic, with int.bit_length for its leading-zero count (a bin() string
# per call there): the library's own calls were a third of recording a result
_MASK = _TEMPLATE.sub_bucket_mask
_HALF_MAGNITUDE = _TEMPLATE.sub_bucket_half_count_magnitude
_HALF = _TEMPLATE.sub_bucket_half_count
_UNIT = _TEMPLATE.unit_magnitude
_VALUES: dict[int, int] = {}  # index → bucket_value, filled as indices are met (≤ 2,688)


def bucket_index(value_us: int) -> int:
    """hdrhistogram's get_counts_array_index(value_us), for 0 ≤ value_us."""
    b = (value_us | _MASK).bit_length() - _UNIT - (_HALF_MAGNITUDE + 1)
    return ((b + 1) << _HALF_MAGNITUDE) + (value_us >> (b + _UNIT)) - _HALF


def bucket_value(index: int) -> int:
    """The highest value equivalent to the bucket (hdrhistogram's percentile convention)."""
    v = _VALUES.get(index)
    if v is None:
        v = _VALUES[index] = _TEMPLATE.get_highest_equivalent_value(
            _TEMPLATE.get_value_from_index(index)
        )
    return v


def quantiles_of(counts: dict[int, int], qs: tuple[float, ...] = QUANTILES) -> dict[float, float]:
    """Quantiles in seconds with hdrhistogram's semantics (target count rounds half up, ≥ 1)."""
    if not counts:
        return {}
    idx = sorted(counts)
    cum = list(accumulate(counts[i] for i in idx))
    total = cum[-1]
    out: dict[float, float] = {}
    j = 0
    for q in sorted(qs):
        target = max(int(q * 100 * total / 100 + 0.5), 1)
        while cum[j] < target:
            j += 1
        out[q] = bucket_value(idx[j]) / 1e6
    return out


@dataclass(frozen=True)
class Recorded:
    """What recording one result did: the window's quantiles after it (seconds; empty when
    nothing was recorded within the window) and how many values it clamped into the HDR range."""

    quantiles: Mapping[float, float]
    out_of_range: int = 0


# A window's counts, one array entry per (sub-window, bucket): slot << 32 | index << 20 | count,
# oldest sub-window first. A probe every 30 s has ~10 entries in a 5-minute window: 80 bytes,
# where a deque of (slot, dict) pairs took ~2 KB per (target, probe) in steady state.
_INDEX_SHIFT = 20
_SLOT_SHIFT = 32
_COUNT_MAX = (1 << _INDEX_SHIFT) - 1  # a fuller entry is followed by another of the same bucket
_INDEX_MASK = (1 << (_SLOT_SHIFT - _INDEX_SHIFT)) - 1
assert bucket_index(HIGHEST_US) <= _INDEX_MASK


class _Window:
    """A window's sub-window counts (see above) and its cached quantiles."""

    __slots__ = ("entries", "quantiles", "count")

    def __init__(self) -> None:
        self.entries = array("q")  # signed: a test clock may start below 0
        # the QUANTILES' values in order, () while the window is empty: a tuple, where a dict
        # of three cost ~200 bytes more for each of 15,000 windows at 5,000 targets
        self.quantiles: tuple[float, ...] = ()
        self.count = 0

    def quantile_map(self) -> dict[float, float]:
        return dict(zip(QUANTILES, self.quantiles, strict=False))

    def add(self, slot: int, index: int) -> None:
        e = self.entries
        key = slot << _SLOT_SHIFT | index << _INDEX_SHIFT
        # the current sub-window's entries are the last ones: find this bucket among them
        j = len(e) - 1
        while j >= 0 and e[j] >> _SLOT_SHIFT == slot:
            if e[j] & ~_COUNT_MAX == key and e[j] & _COUNT_MAX < _COUNT_MAX:
                e[j] += 1
                return
            j -= 1
        e.append(key | 1)

    def expire(self, oldest: int) -> bool:
        """Drop sub-windows older than slot `oldest`; True if any was dropped."""
        e = self.entries
        k = 0
        while k < len(e) and e[k] >> _SLOT_SHIFT < oldest:
            k += 1
        if k:
            del e[:k]
        return k > 0

    def counts(self) -> dict[int, dict[int, int]]:
        """Per live sub-window, its counts by bucket index."""
        out: dict[int, dict[int, int]] = {}
        for v in self.entries:
            c = out.setdefault(v >> _SLOT_SHIFT, {})
            i = v >> _INDEX_SHIFT & _INDEX_MASK
            c[i] = c.get(i, 0) + (v & _COUNT_MAX)
        return out

    def merged(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for v in self.entries:
            i = v >> _INDEX_SHIFT & _INDEX_MASK
            out[i] = out.get(i, 0) + (v & _COUNT_MAX)
        return out


class LatencyRecorder:
    """Thread-safe. `record()` is called once per successful run; `quantiles()` is cheap."""

    def __init__(
        self, window: float = 300.0, buckets: int = 5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.slot_seconds = window / buckets
        self.buckets = buckets
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = {}
        self.out_of_range: dict[tuple[str, str], int] = {}

    def _slot(self) -> int:
        return int(self._clock() // self.slot_seconds)

    def _expire(self, w: _Window, slot: int) -> bool:
        return w.expire(slot - self.buckets + 1)

    def record_result(self, r: ProbeResult) -> Recorded:
        """One result: a successful run's duration is recorded; a failed run's is not latency,
        so it only reads the window."""
        if not r.ok:
            return Recorded(self.quantiles(r.target, r.probe))
        return self._record(r.target, r.probe, r.duration)

    def record(self, target: str, probe: str, seconds: float) -> dict[float, float]:
        """Add one latency; returns the window's quantiles after it. Out-of-range is clamped."""
        return dict(self._record(target, probe, seconds).quantiles)

    def _record(self, target: str, probe: str, seconds: float) -> Recorded:
        us = int(round(seconds * 1e6))
        key = (target, probe)
        clamped = 0
        with self._lock:
            if us < LOWEST_US or us > HIGHEST_US:
                clamped = 1
                self.out_of_range[key] = self.out_of_range.get(key, 0) + 1
                us = min(max(us, LOWEST_US), HIGHEST_US)
            w = self._windows.get(key)
            if w is None:
                w = self._windows[key] = _Window()
            slot = self._slot()
            self._expire(w, slot)
            w.add(slot, bucket_index(us))
            w.quantiles = self._compute(w)
            return Recorded(w.quantile_map(), clamped)

    @staticmethod
    def _compute(w: _Window) -> tuple[float, ...]:
        merged = w.merged()
        w.count = sum(merged.values())
        return tuple(quantiles_of(merged).values())  # in QUANTILES' (sorted) order

    def quantiles(self, target: str, probe: str) -> dict[float, float]:
        """The window's quantiles (empty when nothing was recorded within the window)."""
        with self._lock:
            w = self._windows.get((target, probe))
            if w is None:
                return {}
            if self._expire(w, self._slot()):
                w.quantiles = self._compute(w)
            return w.quantile_map()

    def history(self, target: str, probe: str, q: float = 0.95) -> list[float | None]:
        """Read-only: the q-quantile of each live sub-window, oldest first (None: no runs then).

        One value per sub-window of the whole window, for the status page's sparkline.
        """
        with self._lock:
            w = self._windows.get((target, probe))
            slots = w.counts() if w is not None else {}
            now = self._slot()
        out: list[float | None] = []
        for n in range(now - self.buckets + 1, now + 1):
            counts = slots.get(n)
            out.append(quantiles_of(counts, (q,))[q] if counts else None)
        return out

    def forget(self, target: str) -> None:
        with self._lock:
            for key in [k for k in self._windows if k[0] == target]:
                del self._windows[key]
