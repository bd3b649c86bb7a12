"""Run one probe of one target once: deadline, retries, concurrency cap → ProbeResult.

The one code path for the daemon, `probe --once` and the HTTP endpoints.
Retries (retryPolicy) stay inside the run's deadline; every attempt is counted in the result.
"""

from __future__ import annotations

import logging
import threading
import time

from agent.redaction import Redactor
from agent.targets import TargetPlan
from probes.base import Deadline, Phases, ProbeError, ProbeResult, Reason
from probes.net.waits import sleep

log = logging.getLogger("agent.runner")


def run_probe(
    plan: TargetPlan,
    probe_name: str,
    *,
    stop: threading.Event | None = None,
    redactor: Redactor | None = None,
) -> ProbeResult:
    probe = plan.probes[probe_name]
    deadline = Deadline(plan.timeout)
    started = ProbeResult.now()
    t0 = time.monotonic()
    delay = plan.retry.initial_delay
    attempts = 0
    failure: ProbeError | None = None
    phases = Phases()
    while True:
        attempts += 1
        phases = Phases()
        failure = None
        if not plan.limiter.acquire(timeout=max(deadline.remaining(), 0.0)):
            failure = ProbeError(Reason.TIMEOUT, "agent's connection limit (maxConnections) busy")
        else:
            try:
                outcome = probe.run(deadline, phases)
                return ProbeResult(
                    target=plan.id,
                    probe=probe_name,
                    ok=True,
                    reason=None,
                    message=outcome.message,
                    phases=dict(phases.values),
                    duration=phases.total(),
                    started_at=started,
                    attempts=attempts,
                    warning=outcome.warning,
                    tls=outcome.tls,
                    facts=outcome.facts,
                )
            except ProbeError as e:
                failure = e
            except Exception as e:  # noqa: BLE001 - a probe bug must not kill the scheduler
                text = redactor.scrub(repr(e)) if redactor else type(e).__name__
                plan.logger.error("probe %s/%s crashed: %s", plan.id, probe_name, text)
                failure = ProbeError(Reason.ERROR, f"internal error: {type(e).__name__}")
            finally:
                plan.limiter.release()
        if attempts >= plan.retry.max_attempts or deadline.remaining() <= delay:
            break
        plan.logger.info(
            "probe %s/%s attempt %d failed (%s), retrying in %.0f ms",
            plan.id,
            probe_name,
            attempts,
            failure.reason,
            delay * 1000,
        )
        if sleep(delay, stop):
            break
        delay = min(delay * plan.retry.multiplier, plan.retry.max_delay)
    assert failure is not None
    message = redactor.scrub(failure.message) if redactor else failure.message
    return ProbeResult(
        target=plan.id,
        probe=probe_name,
        ok=False,
        reason=failure.reason,
        message=message,
        phases=dict(phases.values),
        duration=phases.total(),
        started_at=started,
        attempts=attempts,
        # what the run took, retries included: a run that failed before its first phase (refused,
        # DNS) has no phases, and "0.0 ms" would read as an instant answer
        elapsed=time.monotonic() - t0,
        facts=failure.facts,
    )

