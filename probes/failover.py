"""failover: which of a primary/secondary pair is serving, and whether the pair is still a pair.

Primary up → success. Primary down and secondary answering (within failoverTimeout) → success
with the warning "running on secondary" (check WARN, target DEGRADED). All down → failure with
the primary's reason. Each endpoint's time is its own phase (`primary`, `secondary`, ...).

Every endpoint is probed on every run, even when the primary serves, and a dead one is a warning
too: with the standby down the PACS has lost its redundancy ("no standby"), which is what the
failover setup is for, so the check goes WARN before the day the primary fails.
`loadBalancing: ROUND_ROBIN` means every node takes its share of the traffic: any node down is a
warning ("round robin degraded"), whichever it is. Each endpoint's up/down is `facts.endpoints_up`
(exported as pacs_failover_endpoint_up).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from probes.base import Deadline, Facts, Phases, ProbeError, ProbeOutcome, Reason, TLSInfo
from probes.dicom_echo import DicomEchoProbe
from probes.http_timing import timed_get
from probes.settings import HttpProbeSecrets
from probes.specs import BuildContext, DicomEndpoint, HttpEndpoint, ProbeSpec, join_url

Check = Callable[[Deadline, Phases], TLSInfo | None]


def _http_check(ep: HttpEndpoint) -> Check:
    def check(deadline: Deadline, phases: Phases) -> TLSInfo | None:
        rsp = timed_get(ep, ep.url, deadline, phases)
        if not 200 <= rsp.status < 300:
            raise ProbeError(Reason.HTTP_STATUS, f"HTTP {rsp.status}")
        return rsp.tls

    return check


def _dicom_check(ep: DicomEndpoint) -> Check:
    probe = DicomEchoProbe(ep)

    def check(deadline: Deadline, phases: Phases) -> TLSInfo | None:
        return probe.run(deadline, phases).tls

    return check


class FailoverProbe:
    name = "failover"

    def __init__(
        self,
        checks: list[tuple[str, Check]],
        failover_timeout: float | None,
        load_balancing: str | None = None,
    ) -> None:
        self.checks = checks
        self.failover_timeout = failover_timeout
        self.round_robin = load_balancing == "ROUND_ROBIN"

    @classmethod
    def for_http(
        cls,
        primary: HttpEndpoint,
        secondary: HttpEndpoint,
        failover_timeout: float | None = None,
        load_balancing: str | None = None,
    ) -> FailoverProbe:
        return cls(
            [("primary", _http_check(primary)), ("secondary", _http_check(secondary))],
            failover_timeout,
            load_balancing,
        )

    @classmethod
    def for_dicom(
        cls,
        nodes: list[DicomEndpoint],
        failover_timeout: float | None = None,
        load_balancing: str | None = None,
    ) -> FailoverProbe:
        names = ["primary", "secondary"] + [f"secondary{i}" for i in range(2, len(nodes))]
        return cls(
            [(n, _dicom_check(ep)) for n, ep in zip(names, nodes, strict=False)],
            failover_timeout,
            load_balancing,
        )

    def _budget(self, deadline: Deadline, index: int) -> Deadline:
        rest = len(self.checks) - index - 1
        left = max(deadline.remaining(), 0.0)
        if rest == 0:
            return deadline.sub(left)
        if self.failover_timeout is not None:
            # leave each later endpoint its failoverTimeout, but give this one at least a share
            share = max(left - rest * self.failover_timeout, left / (rest + 1))
        else:
            share = left / (rest + 1)
        return deadline.sub(share)

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:
        up: dict[str, bool] = {}
        errors: dict[str, ProbeError] = {}
        tls: TLSInfo | None = None
        for i, (name, check) in enumerate(self.checks):
            sub = Phases()
            t0 = time.perf_counter()
            try:
                info = check(self._budget(deadline, i), sub)
                up[name] = True
                tls = tls or info
                phases.add(name, sub.total())  # the endpoint's wire time, not client set-up
            except ProbeError as e:
                up[name] = False
                errors[name] = e
                # A node that never answered spent its share waiting, which no sub-phase holds
                # (they end at an answer): without this a hung primary reads as ~0 s.
                phases.add(name, max(sub.total(), time.perf_counter() - t0))
        active = next((n for n, _ in self.checks if up[n]), None)
        facts = Facts(active_endpoint=active, endpoints_up=up)
        if active is None:
            first = errors[self.checks[0][0]]
            raise ProbeError(
                first.reason,
                "all endpoints down: " + "; ".join(f"{n}: {e.message}" for n, e in errors.items()),
                facts,  # every node down, none serving: the failed run still names its nodes
            )
        down = [n for n, ok in up.items() if not ok]
        why = "; ".join(f"{n} {errors[n].message}" for n in down)
        if active == "primary":
            if not down:
                msg = "all endpoints serving (round robin)" if self.round_robin else ""
                return ProbeOutcome(msg or "primary serving", tls=tls, facts=facts)
            msg = f"primary serving; {', '.join(down)} down"
            if self.round_robin:
                warning = f"round robin degraded: {why}"
            elif all(not ok for n, ok in up.items() if n != "primary"):
                warning = f"no standby: {why}"  # the next primary failure is an outage
            else:
                warning = f"standby down: {why}"
            return ProbeOutcome(msg, warning=warning, tls=tls, facts=facts)
        warning = f"running on {active}: {why}"
        return ProbeOutcome(
            f"running on {active}",
            warning=f"round robin degraded: {warning}" if self.round_robin else warning,
            tls=tls,
            facts=facts,
        )


class FailoverSettings(HttpProbeSecrets):
    enabled: bool = True


def build(f: FailoverSettings, ctx: BuildContext) -> FailoverProbe | None:
    """HTTP primary/secondary when sectraConfig names both, else the DICOM nodes of
    config.secondaryHosts after config.host; no failover probe without either."""
    if not f.enabled:
        return None
    if ctx.primary_url and ctx.secondary_url:
        own = f.own_secrets()
        return FailoverProbe.for_http(
            ctx.block_http(join_url(ctx.primary_url, ctx.health_path), own),
            ctx.block_http(join_url(ctx.secondary_url, ctx.health_path), own),
            failover_timeout=ctx.failover_timeout,
            load_balancing=ctx.load_balancing,  # ROUND_ROBIN: every node must serve
        )
    if ctx.secondary_dicom:
        return FailoverProbe.for_dicom(
            [ctx.dicom, *ctx.secondary_dicom],
            failover_timeout=ctx.failover_timeout,
            load_balancing=ctx.load_balancing,
        )
    return None


SPEC = ProbeSpec(
    "failover", FailoverSettings, build,
    "Which of the PACS's nodes serves: HTTP primary/secondary or DICOM config.secondaryHosts",
    outputs=("active_endpoint", "endpoints_up"),
)
