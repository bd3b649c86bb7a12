"""Latency recorder: HDR histograms per (target, probe) over a sliding window.

The window is split into `buckets` sub-windows that rotate; quantiles cover the live sub-windows.
Bucketing (value → index → value, 2 significant figures, i.e. within 1 %) is hdrhistogram's own.
Counts are kept sparse ({index: count}) rather than in the library's dense array: a dense 2-figure
histogram over 1 µs..120 s is 2,688 counters (11.7 KB) and its percentile query is a Python loop
over all of them; with 1,000 targets × 3 probes × 5 sub-windows that is 176 MB and ~1 ms a query.
A probe running every 30 s puts ~10 values in a 5-minute window, so sparse counts cost bytes.
Quantiles are computed when a value is recorded (once per run) and cached, so a scrape reads them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import accumulate

from hdrh.histogram import HdrHistogram

from probes.base import ProbeResult

LOWEST_US = 1
HIGHEST_US = 120_000_000  # 120 s: longer than any sane probe deadline
SIGNIFICANT_FIGURES = 2
QUANTILES = (0.5, 0.95, 0.99)

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


@dataclass
class _Window:
    """Sub-windows of sparse counts, newest last."""

    slots: deque[tuple[int, dict[int, int]]] = field(default_factory=deque)  # (slot number, counts)
    quantiles: dict[float, float] = field(default_factory=dict)
    count: int = 0


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

    def _expire(self, w: _Window, slot: int) -> None:
        while w.slots and w.slots[0][0] <= slot - self.buckets:
            w.slots.popleft()

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
            w = self._windows.setdefault(key, _Window())
            slot = self._slot()
            self._expire(w, slot)
            if not w.slots or w.slots[-1][0] != slot:
                w.slots.append((slot, {}))
            counts = w.slots[-1][1]
            i = bucket_index(us)
            counts[i] = counts.get(i, 0) + 1
            w.quantiles = self._compute(w)
            return Recorded(dict(w.quantiles), clamped)

    @staticmethod
    def _compute(w: _Window) -> dict[float, float]:
        merged: dict[int, int] = {}
        for _, counts in w.slots:
            for i, c in counts.items():
                merged[i] = merged.get(i, 0) + c
        w.count = sum(merged.values())
        return quantiles_of(merged)

    def quantiles(self, target: str, probe: str) -> dict[float, float]:
        """The window's quantiles (empty when nothing was recorded within the window)."""
        with self._lock:
            w = self._windows.get((target, probe))
            if w is None:
                return {}
            before = len(w.slots)
            self._expire(w, self._slot())
            if len(w.slots) != before:
                w.quantiles = self._compute(w)
            return dict(w.quantiles)

    def history(self, target: str, probe: str, q: float = 0.95) -> list[float | None]:
        """Read-only: the q-quantile of each live sub-window, oldest first (None: no runs then).

        One value per sub-window of the whole window, for the status page's sparkline.
        """
        with self._lock:
            w = self._windows.get((target, probe))
            slots = {n: dict(c) for n, c in w.slots} if w is not None else {}
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
