"""Health evaluator: results → check PASS/WARN/FAIL → target HEALTHY/DEGRADED/UNHEALTHY → agent.

Rules (defaults from the integration guide):
* a check FAILs after `failureThreshold` consecutive failures and returns to PASS only after
  `successThreshold` consecutive successes (hysteresis);
* it is WARN while it has failed fewer than `failureThreshold` times in a row, when its windowed
  p95 exceeds `degradedLatency`, or when the probe itself warns (running on the secondary,
  certificate expiring);
* a target is UNHEALTHY if any check FAILs, DEGRADED if any WARNs, else HEALTHY; the agent takes
  the worst target.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Protocol

from probes.base import ProbeResult

log = logging.getLogger("agent.evaluator")


class CheckStatus(enum.StrEnum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"


class HealthState(enum.StrEnum):
    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    UNHEALTHY = "UNHEALTHY"
    UNKNOWN = "UNKNOWN"  # no result yet


_SEVERITY = {
    HealthState.HEALTHY: 0,
    HealthState.UNKNOWN: 1,
    HealthState.DEGRADED: 2,
    HealthState.UNHEALTHY: 3,
}


@dataclass(frozen=True)
class Thresholds:
    failure: int = 3
    success: int = 2
    degraded_latency: float = 2.0
    cert_warning_days: float = 14.0


@dataclass
class CheckState:
    name: str
    status: CheckStatus = CheckStatus.PASS
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last: ProbeResult | None = None
    p95: float | None = None
    message: str = ""
    # This check's /health JSON, rendered when it changes (with a renderer), so that /health
    # only joins strings: 1,000 targets re-rendered per request cost ~0.3 s of CPU.
    text: str | None = field(default=None, repr=False, compare=False)


@dataclass
class TargetState:
    id: str
    name: str
    thresholds: Thresholds
    checks: dict[str, CheckState] = field(default_factory=dict)
    state: HealthState = HealthState.UNKNOWN
    maintenance: bool = False  # in a planned window (agent.maintenance): shown, not a state
    head: str = field(default="", repr=False, compare=False)  # /health JSON up to its checks

    def compute(self) -> HealthState:
        statuses = [c.status for c in self.checks.values() if c.last is not None]
        if not statuses:
            return HealthState.UNKNOWN
        if CheckStatus.FAIL in statuses:
            return HealthState.UNHEALTHY
        if CheckStatus.WARN in statuses:
            return HealthState.DEGRADED
        return HealthState.HEALTHY


def _cert_days_left(r: ProbeResult) -> float | None:
    if r.tls is None:
        return None
    return (r.tls.earliest_not_after - time.time()) / 86400.0


def worst(states: list[HealthState]) -> HealthState:
    if not states:
        return HealthState.UNKNOWN
    return max(states, key=lambda s: _SEVERITY[s])


@dataclass(frozen=True)
class Transition:
    """What one result changed: the check's and the target's status before and after."""

    check_before: CheckStatus | None
    check_after: CheckStatus
    target_before: HealthState
    target_after: HealthState


class Renderer(Protocol):
    """Renders the cached /health fragments (agent.health_json.JsonRenderer)."""

    def head(self, t: TargetState) -> str: ...

    def check(self, c: CheckState) -> str: ...


class HealthEvaluator:
    def __init__(self, renderer: Renderer | None = None) -> None:
        self._lock = threading.Lock()
        self.targets: dict[str, TargetState] = {}
        self._renderer = renderer
        # targets per state, kept as results arrive: the agent state is read once per result
        # and a scan of 1,000 targets each time was the agent's largest single CPU cost
        self._counts: dict[HealthState, int] = dict.fromkeys(HealthState, 0)

    def add_target(
        self, target_id: str, name: str, thresholds: Thresholds, checks: list[str]
    ) -> None:
        with self._lock:
            old = self.targets.get(target_id)
            if old is not None:
                self._counts[old.state] -= 1
            ts = TargetState(target_id, name, thresholds)
            ts.checks = {c: CheckState(c) for c in checks}
            self.targets[target_id] = ts
            self._counts[ts.state] += 1
            if self._renderer is not None:
                ts.head = self._renderer.head(ts)
                for c in ts.checks.values():
                    c.text = self._renderer.check(c)

    def set_thresholds(self, target_id: str, thresholds: Thresholds) -> None:
        """New thresholds for a kept target (a reload): its checks keep their history and
        state, and their next result is judged by the new thresholds."""
        with self._lock:
            ts = self.targets.get(target_id)
            if ts is not None:
                ts.thresholds = thresholds

    def remove_target(self, target_id: str) -> None:
        with self._lock:
            ts = self.targets.pop(target_id, None)
            if ts is not None:
                self._counts[ts.state] -= 1

    def set_maintenance(self, active: dict[str, bool]) -> None:
        """Mark targets as in (or out of) a maintenance window; re-renders only what changed."""
        with self._lock:
            for tid, on in active.items():
                ts = self.targets.get(tid)
                if ts is None or ts.maintenance == on:
                    continue
                ts.maintenance = on
                if self._renderer is not None:
                    ts.head = self._renderer.head(ts)

    def update(self, result: ProbeResult, p95: float | None) -> Transition:
        with self._lock:
            ts = self.targets[result.target]
            check = ts.checks.setdefault(result.probe, CheckState(result.probe))
            before = check.status if check.last is not None else None
            self._apply(check, ts.thresholds, result, p95)
            target_before = ts.state
            ts.state = ts.compute()
            tr = Transition(before, check.status, target_before, ts.state)
            if ts.state != target_before:
                self._counts[target_before] -= 1
                self._counts[ts.state] += 1
            if self._renderer is not None:
                check.text = self._renderer.check(check)
                if ts.state != target_before:
                    ts.head = self._renderer.head(ts)
        if tr.check_before is None:
            # a check's first result is not a change: say what it is, in plain words
            if tr.check_after != CheckStatus.PASS:
                log.warning(
                    "check %s/%s first result: %s (%s)",
                    result.target,
                    result.probe,
                    tr.check_after,
                    check.message,
                )
        elif tr.check_before != tr.check_after:
            log.warning(
                "check %s/%s %s -> %s (%s)",
                result.target,
                result.probe,
                tr.check_before,
                tr.check_after,
                check.message,
            )
        if tr.target_before != tr.target_after and tr.target_before != HealthState.UNKNOWN:
            log.warning("target %s %s -> %s", result.target, tr.target_before, tr.target_after)
        return tr

    @staticmethod
    def _apply(check: CheckState, th: Thresholds, r: ProbeResult, p95: float | None) -> None:
        check.last = r
        check.p95 = p95
        if r.ok:
            check.consecutive_successes += 1
            check.consecutive_failures = 0
            if check.status == CheckStatus.FAIL and check.consecutive_successes < th.success:
                n = check.consecutive_successes
                check.message = f"recovering: {n}/{th.success} successes after failure"
                return
            cert_days = _cert_days_left(r)
            if r.warning:
                check.status, check.message = CheckStatus.WARN, r.warning
            elif cert_days is not None and cert_days < th.cert_warning_days:
                check.status = CheckStatus.WARN
                check.message = f"certificate expires in {cert_days:.1f} days"
            elif p95 is not None and p95 > th.degraded_latency:
                check.status = CheckStatus.WARN
                check.message = f"p95 {p95 * 1000:.0f} ms over {th.degraded_latency * 1000:.0f} ms"
            else:
                check.status, check.message = CheckStatus.PASS, r.message
            return
        check.consecutive_failures += 1
        check.consecutive_successes = 0
        if check.consecutive_failures >= th.failure or check.status == CheckStatus.FAIL:
            check.status = CheckStatus.FAIL
        else:
            check.status = CheckStatus.WARN
        check.message = r.message

    def snapshot(self) -> list[TargetState]:
        """A consistent copy for exporters (JSON, status page)."""
        with self._lock:
            return [
                replace(t, checks={k: replace(c) for k, c in t.checks.items()})
                for t in self.targets.values()
            ]

    def agent_state(self) -> HealthState:
        with self._lock:
            return worst([s for s, n in self._counts.items() if n > 0])

    def rendered(self) -> tuple[list[str], HealthState]:
        """Each target's /health JSON from the cached fragments, and the agent state."""
        if self._renderer is None:
            raise RuntimeError("HealthEvaluator was created without a renderer")
        with self._lock:
            parts = [
                t.head + ",".join(c.text or "null" for c in t.checks.values()) + "]}"
                for t in self.targets.values()
            ]
            return parts, worst([s for s, n in self._counts.items() if n > 0])
