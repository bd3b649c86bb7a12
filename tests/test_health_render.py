"""/health from the HealthJsonExporter's cached fragments is the same document as
health_document() over the evaluator's snapshot, and the agent state kept as counts follows adds,
updates, maintenance, removals and re-adds."""

from __future__ import annotations

import json

from agent.evaluator import HealthEvaluator, HealthState, Thresholds
from agent.health_json import HealthJsonExporter, health_document
from agent.observation import Maintenance, Observation, TargetInfo
from agent.recorder import Recorded
from probes.base import Facts, ProbeResult, Reason, TLSInfo


def result(target: str, probe: str, ok: bool, **kw: object) -> ProbeResult:
    return ProbeResult(
        target=target, probe=probe, ok=ok, reason=None if ok else Reason.TIMEOUT,
        message="fine" if ok else 'no "answer" \\ ünïcode',
        phases={"connect": 0.001, "dimse": 0.002}, duration=0.003,
        started_at=ProbeResult.now(), **kw,
    )


class Pair:
    """The evaluator and the /health exporter, fed as the pipeline feeds them."""

    def __init__(self) -> None:
        self.ev = HealthEvaluator()
        self.hx = HealthJsonExporter()

    def add_target(self, tid: str, name: str, th: Thresholds, checks: list[str]) -> None:
        self.ev.add_target(tid, name, th, checks)
        self.hx.add_target(TargetInfo(tid, name, tuple(checks)))

    def remove_target(self, tid: str) -> None:
        self.ev.remove_target(tid)
        self.hx.remove_target(tid)

    def update(self, r: ProbeResult, p95: float | None) -> None:
        self.hx.observe(Observation(r, Recorded({}), self.ev.update(r, p95)))

    def set_maintenance(self, active: dict[str, bool]) -> None:
        self.ev.set_maintenance(active)
        self.hx.event(Maintenance(active))


def same(pair: Pair, shard: str | None = None) -> dict:
    ev = pair.ev
    state, parts = pair.hx.render(shard)
    body = b"".join(parts)  # sent one part after the other (agent.http_body)
    assert body.endswith(b"}\n") and b"\n" not in body[:-1]  # compact, one line
    fast = json.loads(body)
    slow = health_document(ev.snapshot(), shard)
    fast.pop("timestamp")
    slow.pop("timestamp")
    assert fast == slow
    assert state == HealthState(slow["status"]) == ev.agent_state()
    return fast


def test_fragments_match_the_full_document_through_state_changes() -> None:
    ev = Pair()
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
    ev.set_maintenance({"a": True, "b": False})
    assert [t["maintenance"] for t in same(ev)["targets"]] == [True, False]
    ev.set_maintenance({"a": False, "b": False})

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


def test_last_run_is_the_strftime_spelling_it_replaced() -> None:
    """lastRun: ISO 8601 UTC with milliseconds truncated (not rounded), Z, zero-padded."""
    import random
    from datetime import UTC, datetime, timedelta

    from agent.health_json import last_run

    rng = random.Random(5)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    times = [base + timedelta(microseconds=rng.randrange(0, 10**15)) for _ in range(5000)]
    times += [
        datetime(2026, 3, 4, 5, 6, 7, 999_999, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC),
    ]
    for t in times:
        assert last_run(t) == t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    assert last_run(times[-2]) == "2026-03-04T05:06:07.999Z"
