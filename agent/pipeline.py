"""result → latency recorder → health evaluator → exporters: the one-way flow.

Every consumer of results is an Exporter: /metrics (PrometheusExporter), OTLP push
(OTLPExporter), /health (HealthJsonExporter). Each gets a target's description when it is
installed (TargetInfo), one Observation per result (the result, what the recorder recorded, the
evaluator's verdict) and the agent-level events, all through the four methods below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from agent.evaluator import Evaluation, HealthEvaluator
from agent.observation import AgentEvent, Observation, TargetInfo, TargetSettings
from agent.recorder import LatencyRecorder
from agent.targets import TargetPlan
from probes.base import Facts, ProbeResult


class Exporter(Protocol):
    def add_target(self, target: TargetInfo) -> None: ...

    def remove_target(self, target_id: str) -> None: ...

    def observe(self, obs: Observation) -> None: ...

    def event(self, ev: AgentEvent) -> None: ...


def target_info(plan: TargetPlan) -> TargetInfo:
    """What exporters may know of a plan: names, settings, and per probe the facts it declares
    for a run that found nothing (a probe's optional `declared()`)."""
    declared: dict[str, Facts] = {}
    for name, probe in plan.probes.items():
        fn = getattr(probe, "declared", None)
        if callable(fn):
            declared[name] = fn()
    th = plan.thresholds
    return TargetInfo(
        id=plan.id, name=plan.name, probes=tuple(plan.probes), metrics_enabled=plan.metrics_enabled,
        slos=dict(plan.slos), degraded_latency=th.degraded_latency,
        cert_warning_seconds=th.cert_warning_days * 86400, declared=declared,
    )


class Pipeline:
    def __init__(
        self, recorder: LatencyRecorder, evaluator: HealthEvaluator, exporters: Sequence[Exporter]
    ) -> None:
        self.recorder = recorder
        self.evaluator = evaluator
        self.exporters = list(exporters)

    def add_exporter(self, exporter: Exporter) -> None:
        self.exporters.append(exporter)

    def add_target(self, plan: TargetPlan) -> None:
        self.evaluator.add_target(plan.id, plan.name, plan.thresholds, list(plan.probes))
        info = target_info(plan)
        for e in self.exporters:
            e.add_target(info)

    def set_thresholds(self, plan: TargetPlan) -> None:
        """A kept target's new thresholds: judged by them from its next result on."""
        self.evaluator.set_thresholds(plan.id, plan.thresholds)
        self.emit(TargetSettings(target_info(plan)))

    def remove_target(self, target_id: str) -> None:
        self.evaluator.remove_target(target_id)
        self.recorder.forget(target_id)
        for e in self.exporters:
            e.remove_target(target_id)

    def handle(self, r: ProbeResult) -> Evaluation:
        recorded = self.recorder.record_result(r)
        evaluation = self.evaluator.update(r, recorded.quantiles.get(0.95))
        obs = Observation(r, recorded, evaluation)
        for e in self.exporters:
            e.observe(obs)
        return evaluation

    def emit(self, ev: AgentEvent) -> None:
        for e in self.exporters:
            e.event(ev)
