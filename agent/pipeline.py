"""result → latency recorder → health evaluator → exporters: the one-way flow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from agent.evaluator import CheckState, HealthEvaluator, HealthState
from agent.recorder import LatencyRecorder
from agent.slo import ProbeObjectives
from agent.targets import TargetPlan
from probes.base import ProbeResult


class Exporter(Protocol):
    def add_target(
        self, target: str, probes: list[str],
        slos: Mapping[str, ProbeObjectives] | None = None,
    ) -> None: ...

    def remove_target(self, target: str) -> None: ...

    def observe(
        self,
        r: ProbeResult,
        quantiles: dict[float, float],
        check: CheckState,
        target_state: HealthState,
        agent_state: HealthState,
        out_of_range: int = 0,
    ) -> None: ...


class Pipeline:
    def __init__(
        self, recorder: LatencyRecorder, evaluator: HealthEvaluator, exporters: list[Exporter]
    ) -> None:
        self.recorder = recorder
        self.evaluator = evaluator
        self.exporters = exporters

    def add_target(self, plan: TargetPlan) -> None:
        self.evaluator.add_target(plan.id, plan.name, plan.thresholds, list(plan.probes))
        if plan.metrics_enabled:
            for e in self.exporters:
                e.add_target(plan.id, list(plan.probes), plan.slos)

    def remove_target(self, target_id: str) -> None:
        self.evaluator.remove_target(target_id)
        self.recorder.forget(target_id)
        for e in self.exporters:
            e.remove_target(target_id)

    def handle(self, plan: TargetPlan, r: ProbeResult) -> CheckState:
        key = (r.target, r.probe)
        before = self.recorder.out_of_range.get(key, 0)
        if r.ok:  # a failed run's duration is not latency
            q = self.recorder.record(r.target, r.probe, r.duration)
        else:
            q = self.recorder.quantiles(r.target, r.probe)
        oor = self.recorder.out_of_range.get(key, 0) - before
        tr = self.evaluator.update(r, q.get(0.95))
        ts = self.evaluator.targets.get(r.target)
        check = ts.checks[r.probe] if ts else CheckState(r.probe)
        if plan.metrics_enabled:
            agent_state = self.evaluator.agent_state()
            for e in self.exporters:
                e.observe(r, q, check, tr.target_after, agent_state, oor)
        return check
