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

# (name, type, help) of the per-target families, in exposition order (agent.metrics_catalogue).
FAMILIES: tuple[tuple[str, str, str], ...] = tuple(
    (f.name, f.kind, f.help) for f in TARGET_FAMILIES
)
HEADERS = {
    name: f"# HELP {name} {doc}\n# TYPE {name} {kind}\n".encode() for name, kind, doc in FAMILIES
}


def num(x: float) -> str:
    if isinstance(x, int):
        return f"{x}.0" if abs(x) < 1e16 else repr(float(x))
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


class ProbeCounters:
    """Everything exported about one (target, probe)."""

    __slots__ = (
        "buckets",
        "count",
        "sum",
        "runs",
        "failures",
        "attempts",
        "missed",
        "oor",
        "lat_count",
        "lat_sum",
        "slow",
        "dicom_status",
    )

    def __init__(self, classic_histogram: bool = True) -> None:
        # the classic histogram's cumulative buckets, only where it is exported (off by default)
        self.buckets = [0] * len(DURATION_BUCKETS) if classic_histogram else []
        self.count = 0
        self.sum = 0.0
        self.runs = {"success": 0, "failure": 0}
        self.failures: dict[str, int] = {}
        self.attempts = 0
        self.missed = 0
        self.oor = 0
        self.lat_count = 0
        self.lat_sum = 0.0
        self.slow = 0
        self.dicom_status: dict[str, int] = {}  # bounded labels (probes.dicom_status)


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

