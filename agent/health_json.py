"""The health JSON document: the guide's health-check shape, per target."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.evaluator import CheckState, CheckView, HealthState, TargetState, worst
from agent.observation import AgentEvent, Maintenance, Observation, TargetInfo

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


def last_run(t: datetime) -> str:
    """UTC, milliseconds truncated: strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z", without
    strftime's format parsing (a tenth of rendering a check)."""
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}."
        f"{t.microsecond // 1000:03d}Z"
    )


def check_json(c: CheckState | CheckView) -> dict[str, Any]:
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
        lastRun=last_run(r.started_at),
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


# json.dumps with any argument builds a new encoder per call; this is the same one, built once
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def check_text(c: CheckState | CheckView) -> str:
    return _COMPACT.encode(check_json(c))


def head_text(target_id: str, name: str, state: HealthState, maintenance: bool) -> str:
    """A target's /health JSON up to its checks."""
    return (
        f'{{"id":{json.dumps(target_id)},"name":{json.dumps(name)},'
        f'"status":{json.dumps(state.value)},'
        f'"maintenance":{json.dumps(maintenance)},"checks":['
    )


@dataclass(slots=True)
class _Target:
    name: str
    state: HealthState = HealthState.UNKNOWN
    maintenance: bool = False
    head: str = ""
    checks: dict[str, str] = field(default_factory=dict)  # check name → its JSON

    def render_head(self, target_id: str) -> None:
        self.head = head_text(target_id, self.name, self.state, self.maintenance)


class HealthJsonExporter:
    """/health as an exporter: each check's JSON is rendered when its result arrives and each
    target's head when its state or maintenance flag changes, so a request joins cached strings
    (1,000 targets re-rendered per request cost ~0.3 s of CPU; joined, ~7 ms). Every target is
    shown, whether its metrics are enabled or not."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._targets: dict[str, _Target] = {}
        # targets per state, so the agent state is read without a scan
        self._counts: dict[HealthState, int] = dict.fromkeys(HealthState, 0)

    def add_target(self, target: TargetInfo) -> None:
        with self._lock:
            old = self._targets.get(target.id)
            if old is not None:
                self._counts[old.state] -= 1
            t = _Target(target.name)
            t.render_head(target.id)
            t.checks = {p: check_text(CheckView(p)) for p in target.probes}
            # a re-added id keeps its place, as the evaluator's does
            self._targets[target.id] = t
            self._counts[t.state] += 1

    def remove_target(self, target_id: str) -> None:
        with self._lock:
            t = self._targets.pop(target_id, None)
            if t is not None:
                self._counts[t.state] -= 1

    def observe(self, obs: Observation) -> None:
        r, ev = obs.result, obs.evaluation
        text = check_text(ev.check)  # outside the lock: the only real work here
        with self._lock:
            t = self._targets.get(r.target)
            if t is None:
                return  # removed by a reload while this run was going
            t.checks[r.probe] = text
            if t.state != ev.target_after:
                self._counts[t.state] -= 1
                self._counts[ev.target_after] += 1
                t.state = ev.target_after
                t.render_head(r.target)

    def event(self, ev: AgentEvent) -> None:
        if not isinstance(ev, Maintenance):
            return
        with self._lock:
            for tid, on in ev.active.items():
                t = self._targets.get(tid)
                if t is not None and t.maintenance != on:  # re-render only what changed
                    t.maintenance = on
                    t.render_head(tid)

    def state(self) -> HealthState:
        with self._lock:
            return worst([s for s, n in self._counts.items() if n > 0])

    def parts(self) -> tuple[list[str], HealthState]:
        """Each target's /health JSON, joined from its cached fragments, and the agent state."""
        with self._lock:
            parts = [t.head + ",".join(t.checks.values()) + "]}" for t in self._targets.values()]
            return parts, worst([s for s, n in self._counts.items() if n > 0])

    def render(self, shard: str | None = None) -> tuple[HealthState, list[bytes]]:
        """The same document as health_document(), compact, as each target's bytes for
        agent.http_body to join once (built as one string it was copied three times on the way
        to bytes: 4 MB at 5,000 targets)."""
        parts, state = self.parts()
        ts = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        tail = f',"shard":{json.dumps(shard)}}}\n' if shard else "}\n"
        out = [f'{{"timestamp":"{ts}","status":"{state.value}","targets":['.encode()]
        for i, part in enumerate(parts):
            out.append((part if i == 0 else "," + part).encode())
        out.append(("]" + tail).encode())
        return state, out


def http_status_for(state: HealthState) -> int:
    """503 when UNHEALTHY; 200 when HEALTHY, DEGRADED (still serving) or UNKNOWN (no result yet:
    an agent just started must not fail a load balancer's or uptime checker's test)."""
    return 503 if state in (HealthState.UNHEALTHY,) else 200
