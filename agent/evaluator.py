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

    def view(self) -> CheckView:
        return CheckView(self.name, self.status, self.consecutive_failures,
                         self.consecutive_successes, self.last, self.p95, self.message)


@dataclass(frozen=True)
class CheckView:
    """A check as one result left it: immutable, so exporters may keep it."""

    name: str
    status: CheckStatus = CheckStatus.PASS
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    last: ProbeResult | None = None
    p95: float | None = None
    message: str = ""


@dataclass
class TargetState:
    id: str
    name: str
    thresholds: Thresholds
    checks: dict[str, CheckState] = field(default_factory=dict)
    state: HealthState = HealthState.UNKNOWN
    maintenance: bool = False  # in a planned window (agent.maintenance): shown, not a state

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
class Evaluation:
    """What one result did, taken under the evaluator's lock in one go: the check after it, the
    check's and the target's status before and after, and the agent state after."""

    check: CheckView
    check_before: CheckStatus | None
    target_before: HealthState
    target_after: HealthState
    agent_state: HealthState

    @property
    def check_after(self) -> CheckStatus:
        return self.check.status


class HealthEvaluator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.targets: dict[str, TargetState] = {}
        # targets per state, kept as results arrive: the agent state is read once per result
        # and a scan of 1,000 targets each time was the agent's largest single CPU cost
        self._counts: dict[HealthState, int] = dict.fromkeys(HealthState, 0)
        self._agent = HealthState.UNKNOWN  # the worst state with a count, kept with the counts

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
            self._agent = self._worst()

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
                self._agent = self._worst()

    def set_maintenance(self, active: dict[str, bool]) -> None:
        """Mark targets as in (or out of) a maintenance window."""
        with self._lock:
            for tid, on in active.items():
                ts = self.targets.get(tid)
                if ts is not None:
                    ts.maintenance = on

    def update(self, result: ProbeResult, p95: float | None) -> Evaluation:
        with self._lock:
            ts = self.targets[result.target]
            check = ts.checks.setdefault(result.probe, CheckState(result.probe))
            before = check.status if check.last is not None else None
            self._apply(check, ts.thresholds, result, p95)
            target_before = ts.state
            ts.state = ts.compute()
            if ts.state != target_before:
                self._counts[target_before] -= 1
                self._counts[ts.state] += 1
                self._agent = self._worst()
            tr = Evaluation(check.view(), before, target_before, ts.state, self._agent)
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

    def _worst(self) -> HealthState:
        return worst([s for s, n in self._counts.items() if n > 0])

    def agent_state(self) -> HealthState:
        with self._lock:
            return self._agent
