"""The Prometheus exporter's building blocks: bucket bounds, exposition order and headers from
the catalogue, sample value spelling, the per-(target, probe) counters it keeps, and the
agent-level registry read without `_created` samples."""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from agent.evaluator import CheckStatus, HealthState
from agent.metrics_catalogue import TARGET_FAMILIES, family

# 2 s is the guide's degradedLatency default: alerts can count runs on each side of it.
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2,
    2.5,
    5,
    10,
    30,
    60,
)
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# UNKNOWN: no result yet. Exported as a state of its own, so a target that has not reported
# reads 1 there instead of 0 everywhere (which dashboards painted green).
STATES = (HealthState.HEALTHY, HealthState.DEGRADED, HealthState.UNHEALTHY, HealthState.UNKNOWN)
STATUSES = (CheckStatus.PASS, CheckStatus.WARN, CheckStatus.FAIL)
# (member, its label value): enum .value is a descriptor call, paid per line per result before
STATE_VALUES = tuple((s, s.value) for s in STATES)
STATUS_VALUES = tuple((s, s.value) for s in STATUSES)

# (name, type, help) of the per-target families, in exposition order (agent.metrics_catalogue).
FAMILIES: tuple[tuple[str, str, str], ...] = tuple(
    (f.name, f.kind, f.help) for f in TARGET_FAMILIES
)
HEADERS = {
    name: f"# HELP {name} {doc}\n# TYPE {name} {kind}\n".encode() for name, kind, doc in FAMILIES
}


def num(x: float) -> str:
    if x.__class__ is float and x - x == 0.0:  # finite float, the common case: its repr
        return repr(x)
    if isinstance(x, int):
        return f"{x}.0" if abs(x) < 1e16 else repr(float(x))
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


class ProbeCounters:
    """Everything exported about one (target, probe).

    Plain slots rather than small dicts: 15,000 of these at 5,000 targets, and a dict of two
    keys costs ~180 bytes where two ints cost nothing. Failures and DICOM statuses are None
    until the first one (most probes never fail), the classic buckets None unless exported.
    """

    __slots__ = (
        "slot",
        "buckets",
        "count",
        "sum",
        "success",
        "failure",
        "failures",
        "attempts",
        "missed",
        "oor",
        "lat_count",
        "lat_sum",
        "slow",
        "dicom_status",
        "shown_ok",
        "shown_status",
    )

    def __init__(self, slot: int, classic_histogram: bool = True) -> None:
        self.slot = slot  # this (target, probe)'s index in the exporter's fragment lists
        # the classic histogram's cumulative buckets, only where it is exported (off by default)
        self.buckets = [0] * len(DURATION_BUCKETS) if classic_histogram else None
        self.count = 0
        self.sum = 0.0
        self.success = 0
        self.failure = 0
        self.failures: dict[str, int] | None = None  # reason → runs
        self.attempts = 0
        self.missed = 0
        self.oor = 0
        self.lat_count = 0
        self.lat_sum = 0.0
        self.slow = 0
        self.dicom_status: dict[str, int] | None = None  # bounded labels (probes.dicom_status)
        # what probe_success and pacs_check_status show now: most runs change neither, and
        # their fragments are rendered again only when they do
        self.shown_ok: bool | None = None
        self.shown_status: CheckStatus | None = None


def tp_labels(target: str, probe: str) -> str:
    """'target="…",probe="…"': the labels every series of a (target, probe) starts with."""
    return f'target="{target}",probe="{probe}"'


def classic_histogram(tp: str, st: ProbeCounters) -> list[str]:
    """pacs_probe_duration_seconds of one (target, probe): buckets, +Inf, _count and _sum."""
    buckets = st.buckets if st.buckets is not None else [0] * len(DURATION_BUCKETS)
    hist = [
        f'pacs_probe_duration_seconds_bucket{{{tp},le="{num(float(le))}"}} {num(n)}\n'
        for le, n in zip(DURATION_BUCKETS, buckets, strict=True)
    ]
    hist.append(f'pacs_probe_duration_seconds_bucket{{{tp},le="+Inf"}} {num(st.count)}\n')
    hist.append(f"pacs_probe_duration_seconds_count{{{tp}}} {num(st.count)}\n")
    hist.append(f"pacs_probe_duration_seconds_sum{{{tp}}} {num(st.sum)}\n")
    return hist


class WithoutCreated(Collector):
    """The registry's families without their `_created` samples, which double every counter and
    histogram for no use here. Filtered per scrape rather than with prometheus_client's
    disable_created_metrics(), a process-wide switch that importing this module used to flip."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for m in self._registry.collect():
            m.samples = [s for s in m.samples if not s.name.endswith("_created")]
            yield m


def agent_gauge(name: str, registry: CollectorRegistry) -> Gauge:
    f = family(name)
    return Gauge(f.name, f.help, list(f.labels), registry=registry)

