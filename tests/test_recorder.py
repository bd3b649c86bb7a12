"""The latency recorder agrees with hdrhistogram and slides its window."""

from __future__ import annotations

import random

from hdrh.histogram import HdrHistogram

from agent.recorder import HIGHEST_US, LatencyRecorder, bucket_index, quantiles_of


def test_quantiles_equal_hdrhistogram_own_percentiles() -> None:
    rng = random.Random(7)
    ref = HdrHistogram(1, HIGHEST_US, 2)
    counts: dict[int, int] = {}
    for _ in range(20_000):
        v = int(rng.lognormvariate(9, 1.2))  # µs, long tail
        v = min(max(v, 1), HIGHEST_US)
        ref.record_value(v)
        counts[bucket_index(v)] = counts.get(bucket_index(v), 0) + 1
    ours = quantiles_of(counts)
    for q in (0.5, 0.95, 0.99):
        assert ours[q] * 1e6 == ref.get_value_at_percentile(q * 100)


def test_two_significant_figures_are_within_one_percent() -> None:
    for v_us in (137, 2_345, 51_234, 4_999_999):
        got = quantiles_of({bucket_index(v_us): 1})[0.5] * 1e6
        assert abs(got - v_us) / v_us <= 0.01


def test_window_slides() -> None:
    now = [1000.0]
    rec = LatencyRecorder(window=10, buckets=5, clock=lambda: now[0])
    for _ in range(10):
        rec.record("t", "p", 0.100)
    assert abs(rec.quantiles("t", "p")[0.5] - 0.100) < 0.001
    now[0] += 6
    rec.record("t", "p", 0.010)
    assert rec.quantiles("t", "p")[0.5] > 0.09  # old values still in the window
    now[0] += 6  # the 100 ms values are now older than the window
    q = rec.quantiles("t", "p")
    assert abs(q[0.99] - 0.010) < 0.001
    now[0] += 20
    assert rec.quantiles("t", "p") == {}


def test_out_of_range_values_are_clamped_and_counted() -> None:
    rec = LatencyRecorder()
    rec.record("t", "p", 500.0)  # beyond the 120 s range
    rec.record("t", "p", 0.0)
    assert rec.out_of_range[("t", "p")] == 2
    q = rec.quantiles("t", "p")
    assert q[0.99] >= 119.0


def test_window_equals_a_histogram_of_its_live_sub_windows() -> None:
    """Values spread over sub-windows (several in one bucket, several buckets in one
    sub-window, sub-windows left empty): quantiles and history are those of plain counts of
    the values still in the window, as the recorder kept them before its compact entries."""
    rng = random.Random(3)
    now = [500.0]
    rec = LatencyRecorder(window=50, buckets=5, clock=lambda: now[0])
    kept: list[tuple[int, float]] = []  # (sub-window, value)
    for _ in range(400):
        now[0] += rng.choice([0.5, 3.0, 11.0, 27.0])
        v = rng.choice([0.0042, 0.0042, 0.013, rng.lognormvariate(-4, 1)])
        slot = int(now[0] // 10)
        kept = [(s, x) for s, x in kept if s > slot - 5] + [(slot, v)]
        got = rec.record("t", "p", v)
        counts: dict[int, int] = {}
        for _, x in kept:
            i = bucket_index(int(round(x * 1e6)))
            counts[i] = counts.get(i, 0) + 1
        assert got == quantiles_of(counts)
        by_slot: dict[int, dict[int, int]] = {}
        for s, x in kept:
            c = by_slot.setdefault(s, {})
            i = bucket_index(int(round(x * 1e6)))
            c[i] = c.get(i, 0) + 1
        expected = [quantiles_of(by_slot[s], (0.5,))[0.5] if s in by_slot else None
                    for s in range(slot - 4, slot + 1)]
        assert rec.history("t", "p", 0.5) == expected
