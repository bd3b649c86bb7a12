"""retryPolicy: retries inside the run's deadline, every attempt counted (result, JSON, metrics)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.runner import run_probe
from probes.base import Reason
from tests.helpers.config import plan, target
from tests.helpers.dicom_scp import DicomSCP
from tests.helpers.http_servers import HTTPPeer, Route
from tests.helpers.pipeline import Harness

AGENT = str(Path(sys.executable).with_name("agent"))
TID = "pacs-retry"


def api_target(base_url: str, retry: dict[str, Any] | None, timeout_ms: int = 3000) -> dict:
    return target(TID, only=("api_ping",), timeout_ms=timeout_ms, retry=retry,
                  sectra={"apiEndpoint": base_url, "healthCheckEndpoint": "/health"})


RETRY_3 = {"maxAttempts": 3, "initialDelay": 50, "backoffMultiplier": 2, "maxDelay": 1000}


def test_fails_once_then_succeeds_on_the_second_attempt() -> None:
    with HTTPPeer({"/health": Route(fail_first=1)}) as api:
        r = run_probe(plan(api_target(api.base_url, RETRY_3)), "api_ping")
        hits = api.hits["/health"]
    assert r.ok, r.message
    assert r.attempts == 2
    assert hits == 2
    # the successful attempt's phases, not the failed one's added on top
    assert r.phases["first_byte"] < 1.0 and set(r.phases) == {"connect", "first_byte", "transfer"}


def test_without_retry_policy_a_single_failure_is_the_result() -> None:
    with HTTPPeer({"/health": Route(fail_first=1)}) as api:
        r = run_probe(plan(api_target(api.base_url, None)), "api_ping")
        hits = api.hits["/health"]
    assert not r.ok and r.reason == Reason.HTTP_STATUS
    assert r.attempts == 1 and hits == 1


def test_attempts_are_counted_in_the_metrics() -> None:
    with HTTPPeer({"/health": Route(fail_first=1)}) as api:
        h = Harness(plan(api_target(api.base_url, RETRY_3)))
        assert h.value("pacs_probe_attempts_total", target=TID, probe="api_ping") == 0.0
        r, _ = h.run(TID, "api_ping")
        assert r.ok and r.attempts == 2
        assert h.value("pacs_probe_attempts_total", target=TID, probe="api_ping") == 2.0
        assert h.value("pacs_probe_runs_total", target=TID, probe="api_ping",
                       result="success") == 1.0
        # the failed attempt is not a failed run (the series exists from the first failed run)
        assert h.value("pacs_probe_failures_total", target=TID, probe="api_ping",
                       reason="http_status") in (None, 0.0)
        assert h.value("pacs_probe_runs_total", target=TID, probe="api_ping",
                       result="failure") == 0.0
        r, _ = h.run(TID, "api_ping")  # no failure left: one attempt
        assert r.attempts == 1
        assert h.value("pacs_probe_attempts_total", target=TID, probe="api_ping") == 3.0


def test_exhausted_retries_count_every_attempt_and_one_failed_run() -> None:
    with HTTPPeer({"/health": Route(status=503)}) as api:
        h = Harness(plan(api_target(api.base_url, RETRY_3)))
        r, _ = h.run(TID, "api_ping")
        hits = api.hits["/health"]
    assert not r.ok and r.reason == Reason.HTTP_STATUS
    assert r.attempts == 3 and hits == 3
    assert h.value("pacs_probe_attempts_total", target=TID, probe="api_ping") == 3.0
    assert h.value("pacs_probe_runs_total", target=TID, probe="api_ping", result="failure") == 1.0
    assert h.value("pacs_probe_failures_total", target=TID, probe="api_ping",
                   reason="http_status") == 1.0


def test_attempts_in_once_json(tmp_path: Path) -> None:
    with HTTPPeer({"/health": Route(fail_first=1)}) as api:
        cfg = tmp_path / "retry.json"
        cfg.write_text(json.dumps(api_target(api.base_url, RETRY_3)))
        proc = subprocess.run([AGENT, "probe", "--once", "--config", str(cfg), "--output", "json"],
                              capture_output=True, text=True, timeout=60)
        hits = api.hits["/health"]
    assert proc.returncode == 0, proc.stderr
    check = json.loads(proc.stdout)["targets"][0]["checks"][0]
    assert check["name"] == "api_ping" and check["status"] == "PASS"
    assert check["attempts"] == 2
    assert hits == 2


def test_retries_never_exceed_the_deadline() -> None:
    """Every attempt is slow and fails; plenty of attempts allowed, but one deadline for all."""
    timeout = 1.0
    retry = {"maxAttempts": 10, "initialDelay": 20, "backoffMultiplier": 1}
    with HTTPPeer({"/health": Route(status=503, first_byte_delay=0.3)}) as api:
        t0 = time.monotonic()
        r = run_probe(plan(api_target(api.base_url, retry, int(timeout * 1000))), "api_ping")
        elapsed = time.monotonic() - t0
        hits = api.hits["/health"]
    assert not r.ok
    assert r.reason in (Reason.HTTP_STATUS, Reason.TIMEOUT)
    assert 2 <= r.attempts < 10
    # the attempt the deadline cut may or may not have reached the server yet
    assert r.attempts - 1 <= hits <= r.attempts
    assert elapsed < timeout + 1.0, elapsed


def test_no_retry_when_the_backoff_would_pass_the_deadline() -> None:
    retry = {"maxAttempts": 5, "initialDelay": 5000, "maxDelay": 5000}
    with HTTPPeer({"/health": Route(status=503)}) as api:
        t0 = time.monotonic()
        r = run_probe(plan(api_target(api.base_url, retry, timeout_ms=1000)), "api_ping")
        elapsed = time.monotonic() - t0
    assert not r.ok and r.attempts == 1
    assert elapsed < 1.0  # it did not sleep into (or past) the deadline


def test_dicom_echo_retry() -> None:
    with DicomSCP(echo_fail_first=1) as scp:
        t = target(TID, port=scp.port, only=("dicom_echo",), retry=RETRY_3)
        r = run_probe(plan(t), "dicom_echo")
        count = scp.echo_count
    assert r.ok, r.message
    assert r.attempts == 2 and count == 2
    assert {"connect", "associate", "dimse", "release"} <= set(r.phases)
