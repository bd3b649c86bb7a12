"""Turn validated endpoint configs into runnable plans: which probes, with what settings.

Which probes run follows from what the endpoint configures, decided by each probe's builder
(probes.registry): dicom_echo and dicom_find from config.host/port, api_ping from apiEndpoint,
viewer from viewerEndpoint + enableWebViewer, failover from primaryEndpoint + secondaryEndpoint
(or config.secondaryHosts), the optional ones from their own block. `probes:` tunes them and
`probes.NAME.enabled: false` switches one off. The builders share one BuildContext per target
(agent.config.context).
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field

from agent.config.schema import Endpoint
from agent.evaluator import Thresholds
from agent.maintenance import Schedule, schedule_from_config
from agent.probe_selection import build_probes, tls_warnings
from agent.slo import ProbeObjectives, resolve
from probes.base import Probe
from probes.net.waits import current_loop, sleep
from probes.registry import PROBES

log = logging.getLogger("agent.targets")

# Run order: the registry's (probes.registry).
PROBE_ORDER = tuple(PROBES)

_TARGET_LOG = logging.getLogger("agent.target")


class TargetLogger(logging.LoggerAdapter):
    """A target's log: the one "agent.target" logger, the target id in `extra`.

    The target's monitoring.logLevel / enableLogging can only quieten it, never make it louder
    than the agent's level (`probe --once` stays silent on stderr). One logging.getLogger() per
    target id would be cached by `logging` for the life of the process: reloads that bring new
    ids would grow it without bound.
    """

    def __init__(self, target_id: str, level: int) -> None:
        super().__init__(_TARGET_LOG, {"target": target_id})
        self.min_level = level

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's name
        return level >= self.min_level and self.logger.isEnabledFor(level)


LIMIT_POLL_S = 0.005


class ConnectionLimit:
    """config.maxConnections: at most n runs of a target hold a connection at once.

    Tokens in a SimpleQueue, so taking and giving one back are single C calls; a
    threading.BoundedSemaphore is a Python Condition (a lock, a notify) on every run."""

    def __init__(self, n: int) -> None:
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(n):
            self._tokens.put(None)

    def acquire(self, timeout: float | None = None) -> bool:
        if current_loop() is not None:
            return self._acquire_parked(timeout)
        try:
            self._tokens.get(timeout=timeout)
        except queue.Empty:
            return False
        return True

    def _acquire_parked(self, timeout: float | None) -> bool:
        """On the probe loop the holder is a run on the same thread: blocking would stop it from
        ever giving the token back. Poll instead, parking this run between tries (a target at
        its maxConnections is rare, and a few ms late to start is within any timeout)."""
        end = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while True:
            try:
                self._tokens.get_nowait()
                return True
            except queue.Empty:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                sleep(min(LIMIT_POLL_S, left))

    def release(self) -> None:
        self._tokens.put(None)


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 1
    multiplier: float = 2.0
    initial_delay: float = 0.1
    max_delay: float = 30.0


@dataclass
class TargetPlan:
    id: str
    name: str
    interval: float
    timeout: float
    retry: RetrySettings
    thresholds: Thresholds
    probes: dict[str, Probe]
    metrics_enabled: bool = True
    # Service-level objectives of the probes that have one (agent/slo.py).
    slos: dict[str, ProbeObjectives] = field(default_factory=dict)
    logger: logging.LoggerAdapter = field(default_factory=lambda: TargetLogger("", 0))
    # config.maxConnections: concurrent associations/requests this agent opens to the PACS.
    limiter: ConnectionLimit = field(default_factory=lambda: ConnectionLimit(10))
    maintenance: Schedule = field(default_factory=Schedule)  # planned windows (agent.maintenance)


def build_plan(ep: Endpoint) -> TargetPlan:
    c = ep.config
    for warning in tls_warnings(ep):
        log.warning("%s", warning)
    probes = build_probes(ep, warn=lambda text: log.warning("%s", text))

    hc, r = ep.healthCheck, ep.retryPolicy
    level = "WARNING" if ep.monitoring.logLevel == "WARN" else ep.monitoring.logLevel
    logger = TargetLogger(
        ep.id,
        logging.getLevelName(level) if ep.monitoring.enableLogging else logging.CRITICAL + 1,
    )
    return TargetPlan(
        id=ep.id,
        name=ep.name or ep.id,
        interval=hc.interval,
        timeout=hc.timeout,
        retry=RetrySettings(r.maxAttempts, r.backoffMultiplier, r.initialDelay, r.maxDelay),
        thresholds=Thresholds(
            hc.failureThreshold, hc.successThreshold, hc.degradedLatency, hc.certExpiryWarningDays
        ),
        probes=probes,
        metrics_enabled=ep.monitoring.enableMetrics,
        slos=resolve(ep.slo, probes),
        logger=logger,
        limiter=ConnectionLimit(c.maxConnections),
        maintenance=schedule_from_config(ep.maintenance),
    )
