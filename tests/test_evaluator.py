"""Check and target states follow the documented rules (docs/architecture.md), with hysteresis."""

from __future__ import annotations

import time

from agent.evaluator import CheckStatus, HealthEvaluator, HealthState, Thresholds
from probes.base import ProbeResult, Reason, TLSInfo


def result(ok: bool, probe: str = "dicom_echo", **kw: object) -> ProbeResult:
    return ProbeResult(
        target="t", probe=probe, ok=ok, reason=None if ok else Reason.TIMEOUT,
        message="m", phases={}, duration=0.01, started_at=ProbeResult.now(), **kw,
    )


DEFAULT = Thresholds()


def new(th: Thresholds = DEFAULT) -> HealthEvaluator:
    ev = HealthEvaluator()
    ev.add_target("t", "T", th, ["dicom_echo", "api_ping"])
    return ev


def statuses(ev: HealthEvaluator, seq: list[bool]) -> list[str]:
    out = []
    for ok in seq:
        ev.update(result(ok), None)
        out.append(ev.targets["t"].checks["dicom_echo"].status.value)
    return out


def test_fail_after_three_then_pass_after_two() -> None:
    seq = [True, False, False, False, True, True, True]
    assert statuses(new(), seq) == ["PASS", "WARN", "WARN", "FAIL", "FAIL", "PASS", "PASS"]


def test_a_blip_is_warn_not_fail() -> None:
    assert statuses(new(), [True, False, True]) == ["PASS", "WARN", "PASS"]


def test_failure_during_recovery_stays_fail() -> None:
    seq = [False, False, False, True, False, True, True]
    assert statuses(new(), seq)[-3:] == ["FAIL", "FAIL", "PASS"]


def test_latency_over_threshold_is_warn_and_target_degraded() -> None:
    ev = new(Thresholds(degraded_latency=0.5))
    ev.update(result(True), p95=0.7)
    assert ev.targets["t"].checks["dicom_echo"].status == CheckStatus.WARN
    assert ev.targets["t"].state == HealthState.DEGRADED
    ev.update(result(True), p95=0.2)
    assert ev.targets["t"].state == HealthState.HEALTHY


def test_probe_warning_and_expiring_certificate_are_warn() -> None:
    ev = new()
    ev.update(result(True, warning="running on secondary"), None)
    assert ev.targets["t"].checks["dicom_echo"].message == "running on secondary"
    assert ev.targets["t"].state == HealthState.DEGRADED
    soon = time.time() + 5 * 86400
    ev.update(result(True, probe="api_ping", tls=TLSInfo(soon, soon)), None)
    assert ev.targets["t"].checks["api_ping"].status == CheckStatus.WARN


def test_target_is_worst_check_and_agent_is_worst_target() -> None:
    ev = new(Thresholds(failure=1))
    ev.add_target("u", "U", Thresholds(), ["dicom_echo"])
    assert ev.agent_state() == HealthState.UNKNOWN
    ev.update(result(True), None)
    ev.update(result(False, probe="api_ping"), None)
    assert ev.targets["t"].state == HealthState.UNHEALTHY
    ok_u = result(True)
    ok_u.target = "u"
    ev.update(ok_u, None)
    assert ev.agent_state() == HealthState.UNHEALTHY


def test_transitions_are_logged_once(caplog) -> None:  # noqa: ANN001
    ev = new(Thresholds(failure=2))
    with caplog.at_level("WARNING", logger="agent.evaluator"):
        for ok in [True, False, False, False, False, True, True, True]:
            ev.update(result(ok), None)
    lines = [r.getMessage() for r in caplog.records if "check t/dicom_echo" in r.getMessage()]
    assert lines == [
        "check t/dicom_echo PASS -> WARN (m)",
        "check t/dicom_echo WARN -> FAIL (m)",
        "check t/dicom_echo FAIL -> PASS (m)",
    ]
