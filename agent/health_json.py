"""The health JSON document (DESIGN §3 JSON): the guide's health-check shape, per target."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent.evaluator import CheckState, HealthState, TargetState, worst


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def check_json(c: CheckState) -> dict[str, Any]:
    r = c.last
    doc: dict[str, Any] = {"name": c.name, "status": c.status.value if r else "PENDING"}
    if r is None:
        doc.update(message="no result yet", responseTime=None, reason=None, phases={})
        return doc
    doc.update(
        message=c.message or r.message,
        responseTime=_ms(r.duration),
        reason=r.reason.value if r.reason else None,
        phases={k: _ms(v) for k, v in r.phases.items()},
        attempts=r.attempts,
        lastRun=r.started_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
    )
    if c.p95 is not None:
        doc["p95"] = _ms(c.p95)
    if r.tls is not None:
        doc["certificateExpiresAt"] = datetime.fromtimestamp(r.tls.earliest_not_after, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    if "active" in r.detail:
        doc["activeEndpoint"] = r.detail["active"]
    if "matches" in r.detail:
        doc["matches"] = r.detail["matches"]
    return doc


def health_document(targets: list[TargetState], shard: str | None = None) -> dict[str, Any]:
    agent_state = worst([t.state for t in targets])
    doc: dict[str, Any] = {
        "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "status": agent_state.value,
        "targets": [
            {
                "id": t.id,
                "name": t.name,
                "status": t.state.value,
                "checks": [check_json(c) for c in t.checks.values()],
            }
            for t in targets
        ],
    }
    if shard:
        doc["shard"] = shard
    return doc


def http_status_for(state: HealthState) -> int:
    """200 when HEALTHY or DEGRADED (still serving), 503 when UNHEALTHY (or nothing known yet)."""
    return 503 if state in (HealthState.UNHEALTHY,) else 200
