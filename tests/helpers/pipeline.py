"""The daemon's result path without the scheduler: run_probe → Pipeline (recorder, evaluator,
Prometheus exporter), so a test can drive runs one by one and read states and metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agent.evaluator import CheckView, HealthEvaluator, HealthState
from agent.pipeline import Pipeline
from agent.prometheus_exporter import PrometheusExporter
from agent.recorder import LatencyRecorder
from agent.runner import run_probe
from agent.targets import TargetPlan
from probes.base import ProbeResult


class Harness:
    def __init__(self, *plans: TargetPlan) -> None:
        self.exporter = PrometheusExporter()
        self.evaluator = HealthEvaluator()
        self.pipeline = Pipeline(LatencyRecorder(), self.evaluator, [self.exporter])
        self.plans = {p.id: p for p in plans}
        for p in plans:
            self.pipeline.add_target(p)

    def run(self, target: str, probe: str) -> tuple[ProbeResult, CheckView]:
        plan = self.plans[target]
        r = run_probe(plan, probe)
        return r, self.pipeline.handle(r).check

    def target_state(self, target: str) -> HealthState:
        return self.evaluator.targets[target].state

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.exporter.render().decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples().get((name, tuple(sorted(labels.items()))))
