"""GET /probe?target=ID&probe=NAME: run one configured probe now, answer blackbox-style.

Only targets and probes from the running config can be named (404 otherwise), so the endpoint
cannot be used to make the agent dial arbitrary hosts. The run goes through agent.runner.run_probe
like a scheduled one: the target's deadline, retry policy and connection limiter
(`maxConnections`) apply. On-demand runs are also capped agent-wide (busy: 503), so a script
hammering /probe cannot crowd out the scheduled probes. The result is not fed into the
recorder, the health state or /metrics: the scheduled series stay a regular sample.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import generate_latest

from agent.logging_setup import log_run
from agent.redaction import Redactor
from agent.runner import run_probe
from agent.targets import TargetPlan
from probes.base import ProbeResult

MAX_CONCURRENT = 4


def exposition(r: ProbeResult) -> bytes:
    """The run in the Prometheus text format (a fresh registry per run, as blackbox does)."""
    reg = CollectorRegistry(auto_describe=True)
    Gauge("probe_success", "1 if the probe succeeded", registry=reg).set(1 if r.ok else 0)
    Gauge("probe_duration_seconds", "How long the probe took on the wire", registry=reg).set(
        r.duration
    )
    ph = Gauge(
        "probe_phase_duration_seconds",
        "Duration of each phase of the probe",
        ["phase"],
        registry=reg,
    )
    for name, seconds in r.phases.items():
        ph.labels(name).set(seconds)
    Gauge("probe_attempts", "Attempts including retries", registry=reg).set(r.attempts)
    fail = Gauge(
        "probe_failure_reason", "1 for the reason the probe failed", ["reason"], registry=reg
    )
    if r.reason is not None:
        fail.labels(r.reason.value).set(1)
    if r.tls is not None:
        Gauge(
            "probe_ssl_earliest_cert_expiry",
            "Earliest certificate expiry (unix time)",
            registry=reg,
        ).set(r.tls.earliest_not_after)
    return generate_latest(reg)


class OnDemandProber:
    """The /probe handler: `plans()` is the service's installed target set."""

    def __init__(
        self,
        plans: Callable[[], dict[str, TargetPlan]],
        *,
        stop: threading.Event | None = None,
        redactor: Redactor | None = None,
        max_concurrent: int = MAX_CONCURRENT,
    ) -> None:
        self._plans = plans
        self._stop = stop
        self._redactor = redactor
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def __call__(self, target: str, probe: str) -> tuple[int, bytes]:
        plan = self._plans().get(target)
        if plan is None:
            return 404, b"unknown target\n"
        if probe not in plan.probes:
            return 404, b"this target has no such probe\n"
        if not self._slots.acquire(blocking=False):
            return 503, b"too many on-demand probes running; try again\n"
        try:
            r = run_probe(plan, probe, stop=self._stop, redactor=self._redactor)
        finally:
            self._slots.release()
        log_run(r)
        return 200, exposition(r)


__all__ = ["OnDemandProber", "exposition"]
