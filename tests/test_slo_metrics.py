"""SLO metrics: objectives from the `slo:` block (defaults, overrides) as
pacs_slo_objective_ratio, and successful runs over the latency threshold counted in
pacs_probe_slow_runs_total, through the daemon's result path against a real DICOM peer, and the
same in OTLP. `agent probe --once --output json` is unchanged by an `slo:` block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.config import load_config_text
from agent.config.schema import OTLPConfig
from agent.otlp import OTLPExporter, resolve_settings
from agent.simulator import SimulatedPACS
from agent.slo import ProbeObjectives, resolve
from agent.targets import build_plan
from probes.base import ProbeResult, Reason
from tests.helpers.agent_cli import run_agent
from tests.helpers.observe import info, observation
from tests.helpers.otlp_receiver import GrpcReceiver
from tests.helpers.otlp_receiver import points as otlp_points
from tests.helpers.pipeline import Harness
from tests.helpers.ports import held_refused_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim() -> Any:
    with SimulatedPACS() as s:
        yield s


def plan_for(endpoint: dict[str, Any]) -> Any:
    loaded = load_config_text(json.dumps({"targets": [endpoint]}), "<slo-test>", {})
    return build_plan(loaded.model.targets[0])


def test_defaults_overrides_and_target_level_values() -> None:
    doc = {"id": "t", "config": {"host": "h"}}
    cfg = load_config_text(json.dumps({"targets": [doc]}), "<t>", {}).model.targets[0].slo
    got = resolve(cfg, ["dicom_echo", "dicom_find", "api_ping"])
    # DICOM probes: 99.5 % availability by default, no latency SLO; HTTP probes: none
    assert got == {"dicom_echo": ProbeObjectives(0.995), "dicom_find": ProbeObjectives(0.995)}

    doc["slo"] = {
        "availability": 99.9,
        "latency": {"threshold": "2s", "objective": 95},
        "probes": {
            "dicom_find": {"availability": 99.0},
            "api_ping": {"latency": {"threshold": 500, "objective": 90}},
        },
    }
    cfg = load_config_text(json.dumps({"targets": [doc]}), "<t>", {}).model.targets[0].slo
    got = resolve(cfg, ["dicom_echo", "dicom_find", "api_ping"])
    assert got["dicom_echo"] == ProbeObjectives(0.999, 0.95, 2.0)
    assert got["dicom_find"] == ProbeObjectives(0.99, 0.95, 2.0)
    assert got["api_ping"] == ProbeObjectives(0.999, 0.9, 0.5)


def test_targets_with_equal_objectives_share_one_object() -> None:
    """5,000 targets on the defaults hold one objectives object per distinct value, not one
    per (target, probe); a target with its own values gets its own."""
    docs = [{"id": f"t{i}", "config": {"host": "h"}} for i in range(3)]
    docs.append({"id": "own", "config": {"host": "h"}, "slo": {"availability": 99.0}})
    targets = load_config_text(json.dumps({"targets": docs}), "<t>", {}).model.targets
    got = [resolve(t.slo, ["dicom_echo", "dicom_find"]) for t in targets]
    assert got[0]["dicom_echo"] is got[1]["dicom_echo"] is got[2]["dicom_find"]
    assert got[3]["dicom_echo"] == ProbeObjectives(0.99)
    assert got[3]["dicom_echo"] is not got[0]["dicom_echo"]


def test_objectives_and_slow_runs_on_the_result_path(sim: SimulatedPACS) -> None:
    ep = sim.endpoint_config("sim")
    # 1 µs: every successful C-ECHO is slow; C-FIND's own override: 1 h, never slow
    ep["slo"] = {
        "latency": {"threshold": "0.001ms", "objective": 95},
        "probes": {
            "dicom_find": {"availability": 99.0, "latency": {"threshold": "1h", "objective": 90}}
        },
    }
    down = {
        "id": "down",
        "config": {"host": "127.0.0.1", "port": held_refused_port(), "timeout": 1000},
        "slo": {"latency": {"threshold": "0.001ms", "objective": 99}},
        "probes": {"dicom_find": {"enabled": False}},
    }
    h = Harness(plan_for(ep), plan_for(down))
    for _ in range(3):
        r, _check = h.run("sim", "dicom_echo")
        assert r.ok, r.message
    for _ in range(2):
        assert h.run("sim", "dicom_find")[0].ok
    r, _check = h.run("down", "dicom_echo")
    assert not r.ok

    def objective(t: str, p: str, slo: str) -> float | None:
        return h.value("pacs_slo_objective_ratio", target=t, probe=p, slo=slo)

    assert objective("sim", "dicom_echo", "availability") == 0.995
    assert objective("sim", "dicom_echo", "latency") == 0.95
    assert objective("sim", "dicom_find", "availability") == 0.99
    assert objective("sim", "dicom_find", "latency") == 0.9
    assert objective("down", "dicom_echo", "latency") == 0.99
    assert h.value("pacs_probe_slow_runs_total", target="sim", probe="dicom_echo") == 3
    assert h.value("pacs_probe_slow_runs_total", target="sim", probe="dicom_find") == 0
    # a failed run spends availability budget, never latency budget
    assert h.value("pacs_probe_slow_runs_total", target="down", probe="dicom_echo") == 0
    # the target-level latency SLO covers the HTTP probes too; availability is theirs only if set
    assert objective("sim", "api_ping", "latency") == 0.95
    assert objective("sim", "api_ping", "availability") is None
    # removing the target removes its SLO series
    h.pipeline.remove_target("sim")
    assert not any(dict(ls).get("target") == "sim" for _n, ls in h.samples())


def test_latency_off_means_no_slow_run_series(sim: SimulatedPACS) -> None:
    h = Harness(plan_for(sim.endpoint_config("plain")))
    assert h.run("plain", "dicom_echo")[0].ok
    names = {n for n, _ in h.samples()}
    assert "pacs_probe_slow_runs_total" not in names
    # probes without an SLO cost no series: by default only the DICOM probes have one
    slo_probes = {dict(ls)["probe"] for n, ls in h.samples() if n == "pacs_slo_objective_ratio"}
    assert slo_probes == {"dicom_echo", "dicom_find"}
    assert (
        h.value("pacs_slo_objective_ratio", target="plain", probe="dicom_echo", slo="availability")
        == 0.995
    )
    assert (
        h.value("pacs_slo_objective_ratio", target="plain", probe="dicom_echo", slo="latency")
        is None
    )


def test_otlp_exports_objectives_and_slow_runs() -> None:
    def result(ok: bool, duration: float) -> ProbeResult:
        return ProbeResult(
            "t",
            "dicom_echo",
            ok,
            None if ok else Reason.REFUSED,
            "m",
            {},
            duration,
            ProbeResult.now(),
        )

    with GrpcReceiver() as rx:
        s = resolve_settings(OTLPConfig(endpoint=rx.endpoint, protocol="grpc", interval=60000), {})
        assert s is not None
        ex = OTLPExporter(s)
        ex.add_target(info(
            "t", ["dicom_echo", "api_ping"], {"dicom_echo": ProbeObjectives(0.999, 0.95, 1.0)}
        ))
        for ok, d in ((True, 0.5), (True, 1.5), (True, 2.0), (False, 5.0)):
            ex.observe(observation(result(ok, d)))
        ex.force_flush()
        received = rx.received
        ex.shutdown()
    pts = [p for r in received for p in otlp_points([r])]
    objectives = {
        (p.attributes["probe"], p.attributes["slo"]): p.value
        for p in pts
        if p.name == "pacs.slo.objective"
    }
    assert objectives == {("dicom_echo", "availability"): 0.999, ("dicom_echo", "latency"): 0.95}
    slow = [p for p in pts if p.name == "pacs.probe.slow_runs"]
    assert [(p.attributes["probe"], p.value) for p in slow][-1:] == [("dicom_echo", 2)]


def test_probe_once_json_shows_nothing_new(sim: SimulatedPACS, tmp_path: Path) -> None:
    def once(endpoint: dict[str, Any]) -> Any:
        cfg = tmp_path / "c.json"
        cfg.write_text(json.dumps({"targets": [endpoint]}))
        r = run_agent("probe", "--once", "--config", str(cfg), "--output", "json")
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)

    def shape(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: shape(v) for k, v in x.items()}
        if isinstance(x, list):
            return [shape(v) for v in x]
        return type(x).__name__

    # about the document's shape, not latency: a generous degradedLatency keeps a slow run PASS
    plain = sim.endpoint_config("sim", degradedLatency=60000)
    with_slo = dict(
        plain, slo={"availability": 99.9, "latency": {"threshold": "2s", "objective": 95}}
    )
    a, b = once(plain), once(with_slo)
    assert shape(a) == shape(b)
    assert "slo" not in json.dumps(b)
