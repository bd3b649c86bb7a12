"""A check's first result is logged in plain words ("first result: FAIL"), not "NEW -> FAIL";
a first PASS is not logged at all, later changes as "before -> after"."""

from __future__ import annotations

import logging

import pytest

from agent.evaluator import HealthEvaluator, Thresholds
from probes.base import ProbeResult, Reason


def _result(ok: bool) -> ProbeResult:
    return ProbeResult(
        target="pacs",
        probe="dicom_echo",
        ok=ok,
        reason=None if ok else Reason.REFUSED,
        message="Echo successful" if ok else "connection refused by 127.0.0.1:104",
        phases={},
        duration=0.001,
        started_at=ProbeResult.now(),
        attempts=1,
    )


def test_first_failure_then_recovery(caplog: pytest.LogCaptureFixture) -> None:
    ev = HealthEvaluator()
    ev.add_target("pacs", "PACS", Thresholds(failure=1, success=1), ["dicom_echo"])
    with caplog.at_level(logging.INFO, logger="agent.evaluator"):
        ev.update(_result(False), None)
        ev.update(_result(True), None)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == (
        "check pacs/dicom_echo first result: FAIL (connection refused by 127.0.0.1:104)"
    )
    assert lines[1].startswith("check pacs/dicom_echo FAIL -> PASS")
    assert not any("NEW" in ln for ln in lines)


def test_first_pass_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    ev = HealthEvaluator()
    ev.add_target("pacs", "PACS", Thresholds(), ["dicom_echo"])
    with caplog.at_level(logging.INFO, logger="agent.evaluator"):
        ev.update(_result(True), None)
    assert [r.getMessage() for r in caplog.records if "pacs/" in r.getMessage()] == []
