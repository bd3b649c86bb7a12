"""failover: which of a primary/secondary pair is serving.

Primary up → success. Primary down and secondary answering (within failoverTimeout) → success
with the warning "running on secondary" (check WARN, target DEGRADED). All down → failure with
the primary's reason. Each endpoint's time is its own phase (`primary`, `secondary`, ...).
The secondary is probed on every run, even when the primary serves, so a dead standby is seen
(`detail["up"]`) before it is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from probes.base import Deadline, Phases, ProbeError, ProbeOutcome, Reason, TLSInfo
from probes.dicom_echo import DicomEchoProbe
from probes.http_timing import timed_get
from probes.specs import DicomEndpoint, HttpEndpoint

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

    def __init__(self, checks: list[tuple[str, Check]], failover_timeout: float | None) -> None:
        self.checks = checks
        self.failover_timeout = failover_timeout

    @classmethod
    def for_http(
        cls, primary: HttpEndpoint, secondary: HttpEndpoint, failover_timeout: float | None = None
    ) -> FailoverProbe:
        return cls(
            [("primary", _http_check(primary)), ("secondary", _http_check(secondary))],
            failover_timeout,
        )

    @classmethod
    def for_dicom(
        cls, nodes: list[DicomEndpoint], failover_timeout: float | None = None
    ) -> FailoverProbe:
        names = ["primary", "secondary"] + [f"secondary{i}" for i in range(2, len(nodes))]
        return cls(
            [(n, _dicom_check(ep)) for n, ep in zip(names, nodes, strict=False)], failover_timeout
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
        detail = {"active": active, "up": up}
        if active is None:
            first = errors[self.checks[0][0]]
            raise ProbeError(
                first.reason,
                "all endpoints down: " + "; ".join(f"{n}: {e.message}" for n, e in errors.items()),
            )
        if active == "primary":
            down = [n for n, ok in up.items() if not ok]
            msg = "primary serving" + (f"; {', '.join(down)} down" if down else "")
            return ProbeOutcome(msg, tls=tls, detail=detail)
        return ProbeOutcome(
            f"running on {active}",
            warning=f"running on {active}: primary {errors['primary'].message}",
            tls=tls,
            detail=detail,
        )
