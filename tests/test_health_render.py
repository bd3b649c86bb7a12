"""/health from cached fragments is the same document as health_document(), and the
agent state kept as counts follows adds, updates, removals and re-adds."""

from __future__ import annotations

import json

from agent.evaluator import HealthEvaluator, HealthState, Thresholds
from agent.health_json import JsonRenderer, health_document, health_json_bytes
from probes.base import Facts, ProbeResult, Reason, TLSInfo


def result(target: str, probe: str, ok: bool, **kw: object) -> ProbeResult:
    return ProbeResult(
        target=target, probe=probe, ok=ok, reason=None if ok else Reason.TIMEOUT,
        message="fine" if ok else 'no "answer" \\ ünïcode',
        phases={"connect": 0.001, "dimse": 0.002}, duration=0.003,
        started_at=ProbeResult.now(), **kw,
    )


def same(ev: HealthEvaluator, shard: str | None = None) -> dict:
    state, body = health_json_bytes(ev, shard)
    fast = json.loads(body)
    slow = health_document(ev.snapshot(), shard)
    fast.pop("timestamp")
    slow.pop("timestamp")
    assert fast == slow
    assert state == HealthState(slow["status"]) == ev.agent_state()
    return fast


def test_fragments_match_the_full_document_through_state_changes() -> None:
    ev = HealthEvaluator(JsonRenderer())
    th = Thresholds(failure=2)
    ev.add_target("a", 'Site "A"', th, ["dicom_echo", "api_ping"])
    ev.add_target("b", "B", th, ["dicom_find"])
    doc = same(ev)
    assert doc["status"] == "UNKNOWN"
    assert [c["status"] for c in doc["targets"][0]["checks"]] == ["PENDING", "PENDING"]

    ev.update(result("a", "dicom_echo", True), 0.002)
    ev.update(result("b", "dicom_find", True, facts=Facts(matches=0)), None)
    ev.update(result("a", "api_ping", True, tls=TLSInfo(2e9, 2e9)), 0.004)
    assert same(ev)["status"] == "HEALTHY"

    ev.update(result("b", "dicom_find", False), None)
    assert same(ev)["status"] == "DEGRADED"
    ev.update(result("b", "dicom_find", False), None)
    doc = same(ev, "1/3")
    assert doc["status"] == "UNHEALTHY" and doc["shard"] == "1/3"

    ev.remove_target("b")  # the only unhealthy target leaves: the agent is healthy again
    assert same(ev)["status"] == "HEALTHY"
    ev.add_target("a", "A again", th, ["dicom_echo"])  # re-added with new checks: UNKNOWN
    assert same(ev)["status"] == "UNKNOWN"
    ev.update(result("a", "dicom_echo", False), None)
    ev.update(result("a", "dicom_echo", False), None)
    assert same(ev)["status"] == "UNHEALTHY"


def test_agent_state_counts_match_a_scan() -> None:
    ev = HealthEvaluator()
    for i in range(20):
        ev.add_target(f"t{i}", f"T{i}", Thresholds(failure=1), ["dicom_echo"])
    for i in range(20):
        ev.update(result(f"t{i}", "dicom_echo", i % 7 != 0), None)
        scan = max((t.state for t in ev.targets.values()),
                   key=[HealthState.HEALTHY, HealthState.UNKNOWN, HealthState.DEGRADED,
                        HealthState.UNHEALTHY].index)
        assert ev.agent_state() == scan
    for i in (0, 7, 14):
        ev.remove_target(f"t{i}")
    assert ev.agent_state() == HealthState.HEALTHY
    ev.remove_target("missing")  # removing an unknown id changes nothing
    assert ev.agent_state() == HealthState.HEALTHY
