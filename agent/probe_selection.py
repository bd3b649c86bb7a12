"""Which probes a target will run, and what its plan will warn about, without building the plan.

`agent check-config` lists the probes of every target (5,000 targets at start and on every
reload); building each target's plan (agent.targets.build_plan) constructs probe objects and
imports every probe module with pydicom, pynetdicom and httpx, which check-config never uses.
build_plan builds exactly the probes named here (tests/cli/test_probe_selection.py holds the
two to the same answer).
"""

from __future__ import annotations

from agent.config.schema import Endpoint

PROBE_ORDER = (
    "dicom_echo", "dicom_find", "api_ping", "viewer", "failover", "dicom_retrieve", "dicom_store",
    "worklist",
    "dicom_capabilities",
    "dicomweb",
)


def selected_probes(ep: Endpoint) -> tuple[str, ...]:
    """The probes build_plan(ep) builds, in PROBE_ORDER: what the endpoint configures, less
    what `probes.NAME.enabled: false` switches off."""
    c, s, p = ep.config, ep.sectraConfig, ep.probes
    on = {
        "dicom_echo": p.dicom_echo.enabled,
        "dicom_find": p.dicom_find.enabled,
        "api_ping": bool(s.apiEndpoint) and p.api_ping.enabled,
        "viewer": bool(s.viewerEndpoint) and s.enableWebViewer and p.viewer.enabled,
        "failover": p.failover.enabled
        and (bool(s.primaryEndpoint and s.secondaryEndpoint) or bool(c.secondaryHosts)),
        "dicom_retrieve": p.dicom_retrieve is not None and p.dicom_retrieve.enabled,
        "dicom_store": p.dicom_store.enabled,
        "worklist": p.worklist is not None and p.worklist.enabled,
        "dicom_capabilities": p.dicom_capabilities is not None and p.dicom_capabilities.enabled,
        "dicomweb": p.dicomweb is not None and p.dicomweb.enabled and bool(p.dicomweb.endpoint),
    }
    return tuple(n for n in PROBE_ORDER if on[n])


def plan_warnings(ep: Endpoint) -> list[str]:
    """What building the plan logs as warnings (check-config prints the same lines)."""
    out: list[str] = []
    tls = ep.config.tls
    # config.tls applies to DICOM TLS and to every HTTPS probe, so warn whatever enableTLS says
    if not tls.verify:
        out.append(
            f"target {ep.id}: TLS certificate verification is OFF (config.tls.verify=false)"
        )
    elif not tls.verifyHostname:
        out.append(
            f"target {ep.id}: TLS host name verification is OFF (config.tls.verifyHostname=false)"
        )
    s, v = ep.sectraConfig, ep.probes.viewer
    viewer_runs = bool(s.viewerEndpoint) and s.enableWebViewer and v.enabled
    if viewer_runs and v.worklist and not s.worklistEndpoint:
        out.append(
            f"target {ep.id}: probes.viewer.worklist is on but sectraConfig has no "
            "worklistEndpoint; no worklist check"
        )
    return out
