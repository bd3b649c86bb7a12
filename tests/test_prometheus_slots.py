"""The exporter keeps each (target, probe)'s fragments in a slot of one list per family, and a
removed target's slots go to the next target added. What a reload does to /metrics must not
show through that: a removed target leaves no series and no stray family header, and a target
that takes over its slots shows only its own series."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agent.evaluator import HealthEvaluator
from agent.observation import Maintenance
from agent.pipeline import Pipeline
from agent.prometheus_exporter import PrometheusExporter
from agent.recorder import LatencyRecorder
from probes.base import ProbeResult, Reason
from tests.helpers.config import plan, target


def result(target_id: str, probe: str, ok: bool) -> ProbeResult:
    return ProbeResult(target_id, probe, ok, None if ok else Reason.TIMEOUT,
                       "ok" if ok else "timed out", {"connect": 0.01}, 0.01, ProbeResult.now())


def series(ex: PrometheusExporter) -> dict[str, set[tuple[str, str]]]:
    """family sample name → {(target, probe)} of its samples."""
    out: dict[str, set[tuple[str, str]]] = {}
    for fam in text_string_to_metric_families(ex.render().decode()):
        for s in fam.samples:
            if "target" in s.labels:
                out.setdefault(s.name, set()).add((s.labels["target"], s.labels.get("probe", "")))
    return out


def headers(ex: PrometheusExporter) -> list[str]:
    return [line.split()[2] for line in ex.render().decode().splitlines()
            if line.startswith("# TYPE ")]


def test_a_removed_target_leaves_nothing_and_its_slots_serve_the_next() -> None:
    ex = PrometheusExporter()
    pipeline = Pipeline(LatencyRecorder(), HealthEvaluator(), [ex])
    for t in ("a", "b"):
        pipeline.add_target(plan(target(t, only=("dicom_echo", "dicom_find"))))
    pipeline.handle(result("a", "dicom_echo", False))  # a's failure counter: a family of its own
    pipeline.handle(result("b", "dicom_echo", True))
    assert ("a", "dicom_echo") in series(ex)["pacs_probe_failures_total"]

    pipeline.remove_target("a")
    found = series(ex)
    assert all(t != "a" for keys in found.values() for t, _ in keys), found
    # the only failure series was a's: its family header goes with it
    assert "pacs_probe_failures_total" not in headers(ex)
    assert len(headers(ex)) == len(set(headers(ex)))

    pipeline.add_target(plan(target("c", only=("dicom_echo",))))  # takes a's freed slots
    pipeline.handle(result("c", "dicom_echo", True))
    found = series(ex)
    assert ("c", "dicom_echo") in found["probe_success"]
    assert ("c", "dicom_find") not in found.get("probe_success", set())
    assert "pacs_probe_failures_total" not in found  # nothing of a's in the reused slots
    assert {t for keys in found.values() for t, _ in keys} == {"b", "c"}


def test_maintenance_of_a_removed_target_adds_no_series() -> None:
    ex = PrometheusExporter()
    pipeline = Pipeline(LatencyRecorder(), HealthEvaluator(), [ex])
    pipeline.add_target(plan(target("a", only=("dicom_echo",))))
    pipeline.add_target(plan(target("b", only=("dicom_echo",))))
    pipeline.remove_target("a")
    ex.event(Maintenance({"a": True, "b": True, "never-added": True}))
    found = series(ex)["pacs_target_maintenance"]
    assert found == {("b", "")}
