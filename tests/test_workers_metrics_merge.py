"""The supervisor's /metrics: the workers' expositions merged into one valid exposition."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime

from agent.evaluator import CheckStatus, HealthState
from agent.metrics_merge import AGENT_RULES, PER_TARGET, merge_expositions, split_families
from agent.observation import ConfigLoad, PlansInstalled, SelfProbeOverhead, StartLateness
from agent.prometheus_exporter import PrometheusExporter
from probes.base import ProbeResult
from tests.helpers.observe import info, observation
from tests.helpers.promserver import find_promtool


def _result(target: str, ok: bool = True) -> ProbeResult:
    return ProbeResult(
        target=target,
        probe="dicom_echo",
        ok=ok,
        reason=None,
        message="ok",
        phases={"connect": 0.001},
        duration=0.01,
        started_at=datetime.now(UTC),
        attempts=1,
    )


def _worker(targets: list[str], state: HealthState, overhead: float, reload_ts: float) -> bytes:
    e = PrometheusExporter(shard="0/1")
    for t in targets:
        e.add_target(info(t, ["dicom_echo"]))
        e.observe(observation(_result(t), {0.5: 0.01}, CheckStatus.PASS, state))
    e.event(PlansInstalled(len(targets)))
    e.event(SelfProbeOverhead(overhead))
    e.event(ConfigLoad(True, reload_ts))
    e.event(StartLateness(0.002))
    return e.render()


def _samples(text: bytes) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            key, _, v = line.rpartition(" ")
            assert key not in out, f"series twice: {key}"
            out[key] = float(v)
    return out


def test_every_agent_level_family_has_a_merge_rule() -> None:
    # a new registry metric must be given a rule: sum, max, min... are not interchangeable
    names = {m.name for m in PrometheusExporter().registry.collect()}
    assert names - set(AGENT_RULES) == set()
    assert not names & PER_TARGET


def test_merged_exposition_is_valid_complete_and_counts_agent_series_once() -> None:
    a = _worker(["a1", "a2"], HealthState.HEALTHY, 0.002, 2000.0)
    b = _worker(["b1"], HealthState.DEGRADED, 0.009, 1000.0)
    merged = merge_expositions([a, b])
    check = subprocess.run(
        [find_promtool(), "check", "metrics"], input=merged, capture_output=True, timeout=30
    )
    assert check.returncode == 0, check.stderr.decode() + check.stdout.decode()
    assert check.stdout.decode() + check.stderr.decode() == ""  # no lint problem either
    s = _samples(merged)
    for t in ("a1", "a2", "b1"):
        assert s[f'probe_success{{target="{t}",probe="dicom_echo"}}'] == 1.0
    # one HELP/TYPE per family
    names = [n for n, _, _ in split_families(merged)]
    assert len(names) == len(set(names))
    assert s["pacs_agent_targets"] == 3.0
    assert s["pacs_agent_self_probe_overhead_seconds"] == 0.009  # the slowest worker
    assert s["pacs_config_last_reload_successful"] == 1.0
    assert s["pacs_config_last_reload_success_timestamp_seconds"] == 1000.0
    assert s['pacs_agent_info{shard="0/1",version="' + _version() + '"}'] == 1.0
    assert s['pacs_agent_health{state="DEGRADED"}'] == 1.0
    assert sum(v for k, v in s.items() if k.startswith("pacs_agent_health{")) == 1.0
    assert s["pacs_scheduler_start_lateness_seconds_count"] == 2.0  # histograms add up


def test_a_worker_without_targets_does_not_make_the_agent_unknown() -> None:
    merged = merge_expositions(
        [_worker(["a1"], HealthState.HEALTHY, 0.0, 1.0), _worker([], HealthState.UNKNOWN, 0, 1.0)]
    )
    s = _samples(merged)
    assert s['pacs_agent_health{state="HEALTHY"}'] == 1.0
    assert s['pacs_agent_health{state="UNKNOWN"}'] == 0.0


def test_one_failed_reload_shows_in_the_merge() -> None:
    a = PrometheusExporter()
    b = PrometheusExporter()
    a.reload_ok.set(1)
    b.reload_ok.set(0)
    s = _samples(merge_expositions([a.render(), b.render()]))
    assert s["pacs_config_last_reload_successful"] == 0.0


def test_one_worker_merges_to_its_own_exposition() -> None:
    a = _worker(["a1"], HealthState.HEALTHY, 0.001, 5.0)
    assert _samples(merge_expositions([a])) == _samples(a)


def _version() -> str:
    from agent import __version__

    return __version__
