"""Quantiles and time stamps: the arithmetic the figures need."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def histogram_quantile(q: float, cum: dict[float, float]) -> tuple[float, float]:
    """(Prometheus-style interpolated quantile, the upper bound of its bucket)."""
    les = sorted(cum)
    total = cum[les[-1]] if les else 0.0
    if total <= 0:
        return 0.0, 0.0
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le in les:
        c = cum[le]
        if c >= rank:
            if math.isinf(le):
                return prev_le, le
            frac = (rank - prev_c) / (c - prev_c) if c > prev_c else 1.0
            return prev_le + (le - prev_le) * frac, le
        prev_le, prev_c = le, c
    return les[-1], les[-1]


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def parse_ts(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
