"""What flows into the exporters: a target's description when it is installed, one Observation
per probe result, and the agent-level events. Plain immutable data, importing no probe module
but probes.base, so exporters can depend on it without seeing probe internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.evaluator import Evaluation
from agent.recorder import Recorded
from agent.slo import ProbeObjectives
from probes.base import Facts, ProbeResult


@dataclass(frozen=True)
class TargetInfo:
    """A target as the exporters see it: its checks, settings and what each probe declares."""

    id: str
    name: str
    probes: tuple[str, ...]
    metrics_enabled: bool = True  # False: /health shows it, metric exporters skip it
    slos: Mapping[str, ProbeObjectives] = field(default_factory=dict)
    degraded_latency: float = 2.0
    cert_warning_seconds: float = 14 * 86400.0
    # Per probe, the facts it reports when a run finds nothing (every failover node down, every
    # proposed context refused): the series a failed run leaves, derived from configuration
    # rather than from the previous run. A probe declaring nothing has no such series.
    declared: Mapping[str, Facts] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """One probe result on its way to the exporters: the result, what the recorder did with it
    and what the evaluator made of it."""

    result: ProbeResult
    recorded: Recorded
    evaluation: Evaluation


# -- agent-level events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MissedRun:
    """The scheduler missed or skipped a run (pool busy, previous run still going)."""

    target: str
    probe: str


@dataclass(frozen=True)
class StartLateness:
    """How late a run started (actual minus scheduled), seconds."""

    seconds: float


@dataclass(frozen=True)
class ConfigLoad:
    """A config (re)load: ok with the time it was swapped in, or rejected (at None)."""

    ok: bool
    at: float | None = None


@dataclass(frozen=True)
class PlansInstalled:
    """A target set was installed: how many targets this agent (shard) probes."""

    targets: int


@dataclass(frozen=True)
class SelfProbeOverhead:
    seconds: float


@dataclass(frozen=True)
class Maintenance:
    """Targets in (True) or out of (False) a maintenance window, refreshed before every read."""

    active: Mapping[str, bool]


@dataclass(frozen=True)
class ExportFailed:
    """A push exporter's export attempt failed (counted on /metrics)."""

    exporter: str  # "otlp"


@dataclass(frozen=True)
class TargetSettings:
    """A kept target's thresholds changed in a reload (its series and state stay)."""

    target: TargetInfo


AgentEvent = (
    MissedRun | StartLateness | ConfigLoad | PlansInstalled | SelfProbeOverhead | Maintenance
    | TargetSettings | ExportFailed
)

__all__ = [
    "AgentEvent", "ConfigLoad", "ExportFailed", "Maintenance", "MissedRun", "Observation",
    "PlansInstalled", "SelfProbeOverhead", "StartLateness", "TargetInfo", "TargetSettings",
]
