"""The health JSON document: the guide's health-check shape, per target."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from agent.evaluator import CheckState, HealthEvaluator, HealthState, TargetState, worst

# The result facts (probes.base.Facts) a check's JSON shows when a run measured them, under
# their JSON names: counts and the serving node only, nothing of the matched data.
SHOWN_FACTS = (
    ("active_endpoint", "activeEndpoint"),
    ("matches", "matches"),
    ("capped", "capped"),
    ("instances", "instances"),
    ("size_bytes", "bytes"),
    ("worklist_status", "worklist_status"),
    ("worklist_bytes", "worklist_bytes"),
)


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
        responseTime=_ms(r.duration if r.ok else max(r.duration, r.elapsed or 0.0)),
        reason=r.reason.value if r.reason else None,
        phases={k: _ms(v) for k, v in r.phases.items()},
        attempts=r.attempts,
        lastRun=r.started_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
    )
    if c.p95 is not None:
        doc["p95"] = _ms(c.p95)
    if r.tls is not None:
        doc["certificateExpiresAt"] = datetime.fromtimestamp(
            r.tls.earliest_not_after, UTC
        ).strftime("%Y-%m-%dT%H:%M:%SZ")
    for field_name, key in SHOWN_FACTS:
        value = getattr(r.facts, field_name)
        if value is not None:
            doc[key] = value
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
                "maintenance": t.maintenance,
                "checks": [check_json(c) for c in t.checks.values()],
            }
            for t in targets
        ],
    }
    if shard:
        doc["shard"] = shard
    return doc


class JsonRenderer:
    """The fragments HealthEvaluator caches: a check's JSON, a target's up to its checks."""

    @staticmethod
    def check(c: CheckState) -> str:
        return json.dumps(check_json(c), separators=(",", ":"))

    @staticmethod
    def head(t: TargetState) -> str:
        return (
            f'{{"id":{json.dumps(t.id)},"name":{json.dumps(t.name)},'
            f'"status":{json.dumps(t.state.value)},'
            f'"maintenance":{json.dumps(t.maintenance)},"checks":['
        )


def health_json_bytes(ev: HealthEvaluator, shard: str | None = None) -> tuple[HealthState, bytes]:
    """The same document as health_document(), compact, joined from the evaluator's cached
    fragments: /health for 1,000 targets costs a join, not 3,000 check renders."""
    parts, state = ev.rendered()
    ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    tail = f',"shard":{json.dumps(shard)}}}\n' if shard else "}\n"
    text = f'{{"timestamp":"{ts}","status":"{state.value}","targets":[' + ",".join(parts) + "]"
    return state, (text + tail).encode()


def http_status_for(state: HealthState) -> int:
    """503 when UNHEALTHY; 200 when HEALTHY, DEGRADED (still serving) or UNKNOWN (no result yet:
    an agent just started must not fail a load balancer's or uptime checker's test)."""
    return 503 if state in (HealthState.UNHEALTHY,) else 200
