"""/metrics re-renders only the fragments a result changed: what it leaves alone must still be
what the last result says (success, check status, target and agent health, failure counters),
through every kind of transition the evaluator makes."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from agent.evaluator import HealthEvaluator
from agent.pipeline import Pipeline
from agent.prometheus_exporter import PrometheusExporter
from agent.recorder import LatencyRecorder
from probes.base import ProbeResult, Reason
from tests.helpers.config import plan, target


def result(target_id: str, probe: str, ok: bool, seconds: float = 0.01) -> ProbeResult:
    return ProbeResult(target_id, probe, ok, None if ok else Reason.REFUSED,
                       "ok" if ok else "refused", {"connect": seconds}, seconds,
                       ProbeResult.now())


def samples(ex: PrometheusExporter) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(ex.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def one(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_every_result_leaves_series_that_match_the_evaluator() -> None:
    plans = [plan(target(t, only=("dicom_echo", "dicom_find"))) for t in ("a", "b")]
    ex = PrometheusExporter()
    evaluator = HealthEvaluator()
    pipeline = Pipeline(LatencyRecorder(), evaluator, [ex])
    for p in plans:
        pipeline.add_target(p)
    # up, down to FAIL (UNHEALTHY), recovering (still FAIL), back up; the other target stays up
    sequence = [True, True, False, False, False, False, True, True, True, False, True]
    runs = {"success": 0, "failure": 0}
    for step, ok in enumerate(sequence):
        pipeline.handle(result("a", "dicom_echo", ok))
        pipeline.handle(result("a", "dicom_find", True))
        pipeline.handle(result("b", "dicom_echo", True, 0.002 * (step + 1)))
        runs["success" if ok else "failure"] += 1
        found = samples(ex)
        state = {t.id: t for t in evaluator.snapshot()}
        for tid, ts in state.items():
            for s in ("HEALTHY", "DEGRADED", "UNHEALTHY", "UNKNOWN"):
                want = 1.0 if ts.state.value == s else 0.0
                assert one(found, "pacs_target_health", target=tid, state=s) == want, (step, tid)
            for probe, check in ts.checks.items():
                if check.last is None:
                    continue  # b's dicom_find has not run: its series are the initial ones
                for st in ("PASS", "WARN", "FAIL"):
                    want = 1.0 if check.status.value == st else 0.0
                    got = one(found, "pacs_check_status", target=tid, probe=probe, status=st)
                    assert got == want, (step, tid, probe, st)
                assert one(found, "probe_success", target=tid, probe=probe) == float(
                    check.last.ok
                )
        for s in ("HEALTHY", "DEGRADED", "UNHEALTHY", "UNKNOWN"):
            want = 1.0 if evaluator.agent_state().value == s else 0.0
            assert one(found, "pacs_agent_health", state=s) == want, step
        for res, n in runs.items():
            assert one(found, "pacs_probe_runs_total", target="a", probe="dicom_echo",
                       result=res) == n
        key = ("pacs_probe_failures_total",
               (("probe", "dicom_echo"), ("reason", "refused"), ("target", "a")))
        assert found.get(key, 0.0) == runs["failure"]  # no series before the first failure
        assert one(found, "probe_duration_seconds", target="b", probe="dicom_echo") == (
            0.002 * (step + 1)
        )
