"""Feeding exporters directly: a TargetInfo and an Observation built by hand, for tests that drive
one exporter without the recorder and evaluator in front of it."""

from __future__ import annotations

from collections.abc import Mapping

from agent.evaluator import CheckStatus, CheckView, Evaluation, HealthState
from agent.observation import Observation, TargetInfo
from agent.recorder import Recorded
from agent.slo import ProbeObjectives
from probes.base import Facts, ProbeResult


def info(
    target: str, probes: list[str] | tuple[str, ...],
    slos: Mapping[str, ProbeObjectives] | None = None,
    declared: Mapping[str, Facts] | None = None, **kw: object,
) -> TargetInfo:
    return TargetInfo(target, target, tuple(probes), slos=dict(slos or {}),
                      declared=dict(declared or {}), **kw)  # type: ignore[arg-type]


def observation(
    r: ProbeResult,
    quantiles: Mapping[float, float] | None = None,
    status: CheckStatus = CheckStatus.PASS,
    target_state: HealthState = HealthState.HEALTHY,
    agent_state: HealthState | None = None,
    out_of_range: int = 0,
) -> Observation:
    check = CheckView(r.probe, status, last=r)
    ev = Evaluation(check, None, HealthState.UNKNOWN, target_state, agent_state or target_state)
    return Observation(r, Recorded(dict(quantiles or {}), out_of_range), ev)
