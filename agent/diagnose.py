"""`agent diagnose`: the integration guide's diagnoseConnection, one step at a time.

DNS → TCP → TLS → association → C-ECHO → C-FIND → API (HTTP), one line per step with its time,
stopping at the first failure with a hint that names host:port and what to check (the runbooks'
likely causes, docs/runbooks.md). It is the probes' own building blocks (probes.net's
resolve/open_socket/tls_handshake, probes.dicom_wire's DicomAssociation, the dicom_echo,
dicom_find and api_ping probes), run separately so that each layer is seen on its own: no second
DICOM client.

Exit codes as `probe --once`: 0 every step passed, 1 passed with a warning (certificate expiring,
a step slower than degradedLatency), 2 a step failed, 3 the config or target id is wrong.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from agent.config.context import tls_options
from agent.config.schema import Endpoint
from agent.targets import TargetPlan, build_plan
from probes.api_ping import ApiPingProbe
from probes.base import Deadline, Phases, ProbeError, ProbeOutcome, Reason, TLSInfo
from probes.dicom_echo import VERIFICATION, DicomEchoProbe
from probes.dicom_wire import DicomAssociation
from probes.net import open_socket, resolve, tls_handshake
from probes.specs import DicomEndpoint, tls_context

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"
# The imaging-path probes run after the guide's steps, each only where its probe is configured.
IMAGING = ("worklist", "dicom_capabilities", "dicom_retrieve", "dicom_store", "dicomweb")
STEPS = ("dns", "tcp", "tls", "association", "c-echo", "c-find", "api", *IMAGING)
TITLES = {
    "dns": "DNS",
    "tcp": "TCP",
    "tls": "TLS",
    "association": "Association",
    "c-echo": "C-ECHO",
    "c-find": "C-FIND",
    "api": "API (HTTP)",
    "worklist": "Worklist",
    "dicom_capabilities": "Capabilities",
    "dicom_retrieve": "Retrieve",
    "dicom_store": "C-STORE",
    "dicomweb": "DICOMweb",
}


@dataclass
class Step:
    name: str
    status: str
    seconds: float | None = None
    detail: str = ""
    reason: str | None = None

    def json(self) -> dict[str, Any]:
        ms = None if self.seconds is None else round(self.seconds * 1000, 3)
        return {
            "step": self.name,
            "status": self.status,
            "ms": ms,
            "detail": self.detail,
            "reason": self.reason,
        }


@dataclass
class Diagnosis:
    id: str
    name: str
    address: str
    steps: list[Step] = field(default_factory=list)
    hint: str | None = None

    @property
    def status(self) -> str:
        statuses = [s.status for s in self.steps]
        return FAIL if FAIL in statuses else WARN if WARN in statuses else OK

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "address": self.address,
            "status": self.status,
            "steps": [s.json() for s in self.steps],
            "hint": self.hint,
        }


def dicom_endpoint(ep: Endpoint) -> DicomEndpoint:
    c = ep.config
    return DicomEndpoint(
        host=c.host,
        port=c.port,
        calling_aet=c.callingAET,
        called_aet=c.calledAET,
        tls=tls_options(c.tls) if c.enableTLS else None,
        max_pdu=ep.dicomConfig.maxPDUSize,
    )


def _expiry(info: TLSInfo | None) -> tuple[str, float | None]:
    if info is None:
        return "", None
    days = (info.earliest_not_after - time.time()) / 86400
    at = datetime.fromtimestamp(info.earliest_not_after, UTC)
    return f"certificate valid until {at:%Y-%m-%d} ({days:.0f} days)", days


def hint(step: str, e: ProbeError, ep: DicomEndpoint, where: str) -> str:
    """What to check, by step and reason (docs/runbooks.md, "Likely causes")."""
    r = e.reason
    calling, called = ep.calling_aet, ep.called_aet
    if r == Reason.DNS:
        host = where.rsplit(":", 1)[0]
        return (
            f"{host} does not resolve from this machine: check the host name in the config and "
            "this machine's DNS servers (/etc/resolv.conf); try `getent hosts` on it."
        )
    if r == Reason.REFUSED:
        return (
            f"{where} refused the connection: nothing listens there. The PACS service is down or "
            "the port is wrong; check the service on the PACS host and the configured port."
        )
    if r == Reason.CONNECT_TIMEOUT:
        return (
            f"No answer from {where}: the host is down or a firewall drops the traffic. Check the "
            f"firewall rules between this machine and the PACS for TCP port "
            f"{where.rsplit(':', 1)[1]}, and that the host is up."
        )
    if r == Reason.TLS:
        return (
            f"TLS with {where} failed ({e.message}): check the certificate. Is it issued by the "
            "CA in config.tls.caFile, for the host name in the config (or tls.serverName), and "
            "not expired? Does the PACS speak TLS on this port at all (enableTLS)?"
        )
    if step == "association" and r in (Reason.REJECTED, Reason.ABORTED):
        return (
            f"{where} turned the association down: check the AE title registration on the PACS. "
            f"It must know our calling AE title {calling!r} (with this machine's IP address) "
            f"and answer to the called AE title {called!r}; or its association limit is "
            "reached."
        )
    if r == Reason.TIMEOUT:
        return (
            f"{where} accepted the connection but did not answer {TITLES[step]} in time: the PACS "
            "service is hung or overloaded (check its load, database and logs)."
        )
    if step == "c-find":
        return (
            f"C-ECHO works but C-FIND on {where} failed ({e.message}): the query side of the "
            "PACS (its database or index) is unhealthy, or our AE title may not query; for a "
            "wrong match count check the canary under probes.dicom_find."
        )
    if step == "dicom_retrieve":
        return (
            f"Retrieve from {where} failed ({e.message}): for C-MOVE the PACS must know the move "
            "destination AE title with this agent's address and port (storeListen); check the "
            "canary study exists (probes.dicom_retrieve.studyInstanceUID) and that the PACS "
            "may send to us."
        )
    if step == "dicom_store":
        return (
            f"C-STORE to {where} failed ({e.message}): check that the PACS accepts storage from "
            f"our AE title {calling!r}, its storage space, and its archive's logs."
        )
    if step == "api":
        return (
            f"The web API at {where} failed ({e.message}): check that the PACS web service is "
            "running, the apiEndpoint URL and path, and the credentials."
        )
    return (
        f"{TITLES[step]} with {where} failed ({e.message}): the PACS service is unhealthy; "
        "check its status and logs."
    )


Runner = Callable[[Deadline, Phases], ProbeOutcome]


class _Run:
    """Runs the steps in order; the first failure ends it with a hint."""

    def __init__(self, plan: TargetPlan, ep: Endpoint) -> None:
        self.plan = plan
        self.endpoint = dicom_endpoint(ep)
        self.where = self.endpoint.label
        self.result = Diagnosis(plan.id, plan.name, self.where)
        self.failed = False

    def _fail(self, step: str, e: ProbeError, seconds: float | None, where: str) -> None:
        self.result.steps.append(Step(step, FAIL, seconds, e.message, e.reason.value))
        self.result.hint = hint(step, e, self.endpoint, where)
        self.failed = True

    def _slow(self, seconds: float) -> bool:
        return seconds > self.plan.thresholds.degraded_latency

    def connection(self) -> None:
        ep = self.endpoint
        deadline, phases = Deadline(self.plan.timeout), Phases()
        t0 = time.perf_counter()
        try:
            infos = resolve(ep.host, ep.port, deadline, phases)
        except ProbeError as e:
            self._fail("dns", e, time.perf_counter() - t0, self.where)
            return
        addrs = sorted({str(i[4][0]) for i in infos})
        dns_time = phases.values.get("dns")
        literal = " (an address: nothing to resolve)" if dns_time is None else ""
        self.result.steps.append(
            Step("dns", OK, dns_time, f"{ep.host} → {', '.join(addrs)}{literal}")
        )
        t0 = time.perf_counter()
        try:
            sock = open_socket(ep.host, ep.port, deadline, phases)
        except ProbeError as e:
            # a failed connect records no phase: the time until it failed is what there is
            self._fail("tcp", e, time.perf_counter() - t0, self.where)
            return
        try:
            peer = sock.getpeername()
            self.result.steps.append(
                Step("tcp", OK, phases.values["connect"], f"connected to {peer[0]}:{peer[1]}")
            )
            if ep.tls is None:
                self.result.steps.append(Step("tls", SKIP, None, "enableTLS is off"))
            else:
                try:
                    ctx = tls_context(ep.tls)
                except (OSError, ValueError) as e:
                    err = ProbeError(Reason.TLS, f"TLS settings unusable: {type(e).__name__}")
                    self._fail("tls", err, None, self.where)
                    return
                try:
                    sock, info = tls_handshake(
                        sock, ctx, ep.tls.server_name or ep.host, deadline, phases
                    )
                except ProbeError as e:
                    self._fail("tls", e, phases.values.get("tls"), self.where)
                    return
                text, days = _expiry(info)
                warn = days is not None and days < self.plan.thresholds.cert_warning_days
                self.result.steps.append(
                    Step("tls", WARN if warn else OK, phases.values["tls"], text)
                )
            assoc = DicomAssociation(sock, deadline, phases, max_pdu=ep.max_pdu)
            try:
                assoc.associate(ep.calling_aet, ep.called_aet, [VERIFICATION])
            except ProbeError as e:
                assoc.abort()
                self._fail("association", e, phases.values.get("associate"), self.where)
                return
            self.result.steps.append(
                Step(
                    "association",
                    OK,
                    phases.values["associate"],
                    f"accepted: {ep.calling_aet} → {ep.called_aet}",
                )
            )
            try:
                assoc.release()
            except ProbeError:
                assoc.abort()
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def probe(self, step: str, run: Runner | None, where: str, why_skipped: str) -> None:
        if run is None:
            self.result.steps.append(Step(step, SKIP, None, why_skipped))
            return
        deadline, phases = Deadline(self.plan.timeout), Phases()
        try:
            out = run(deadline, phases)
        except ProbeError as e:
            self._fail(step, e, phases.values.get("dimse", phases.total() or None), where)
            return
        seconds = phases.values.get("dimse", phases.total())
        status = WARN if self._slow(seconds) else OK
        detail = out.message
        if status == WARN:
            limit = self.plan.thresholds.degraded_latency * 1000
            detail += f" (slower than degradedLatency {limit:.0f} ms)"
        self.result.steps.append(Step(step, status, seconds, detail))


def diagnose_target(ep: Endpoint) -> Diagnosis:
    plan = build_plan(ep)
    run = _Run(plan, ep)
    for stage in ("connection", "c-echo", "c-find", "api"):
        if run.failed:
            break
        if stage == "connection":
            run.connection()
        elif stage == "c-echo":
            run.probe("c-echo", DicomEchoProbe(run.endpoint).run, run.where, "")
        elif stage == "c-find":
            find = plan.probes.get("dicom_find")
            run.probe("c-find", find.run if find else None, run.where, "probes.dicom_find is off")
        else:
            api = plan.probes.get("api_ping")
            where = run.where
            if isinstance(api, ApiPingProbe):
                url = urlsplit(api.endpoint.url)
                port = url.port or (443 if url.scheme == "https" else 80)
                where = f"{url.hostname}:{port}"
            run.probe("api", api.run if api else None, where, "no sectraConfig.apiEndpoint")
    for name in IMAGING:
        probe = plan.probes.get(name)
        if run.failed or probe is None:
            continue  # not configured: no line (the guide's steps always show)
        where = run.where
        http = getattr(probe, "endpoint", None)
        if name == "dicomweb" and http is not None and hasattr(http, "url"):
            url = urlsplit(http.url)
            where = f"{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"
        run.probe(name, probe.run, where, "")
    return run.result


EXIT = {OK: 0, WARN: 1, FAIL: 2}


def exit_code(results: list[Diagnosis]) -> int:
    return max((EXIT[r.status] for r in results), default=3)


def render_text(results: list[Diagnosis]) -> str:
    lines: list[str] = []
    for d in results:
        if lines:
            lines.append("")
        lines.append(f"{d.id} ({d.name})  DICOM {d.address}")
        for s in d.steps:
            ms = "" if s.seconds is None else f"{s.seconds * 1000:.2f} ms"
            reason = f" [{s.reason}]" if s.reason else ""
            lines.append(f"  {TITLES[s.name]:<12} {s.status:<4} {ms:>10}  {s.detail}{reason}")
        if d.hint:
            lines.extend(
                textwrap.wrap(d.hint, 96, initial_indent="  Hint: ", subsequent_indent="        ")
            )
        lines.append(f"  Result: {d.status}")
    return "\n".join(lines)


__all__ = ["Diagnosis", "Step", "diagnose_target", "exit_code", "hint", "render_text"]
