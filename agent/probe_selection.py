"""A target's probes, built by the registry's builders (probes.registry), without the rest of
its plan: what `agent check-config` lists for every target (5,000 of them at start and on every
reload) and what build_plan runs.

Building the rest of a plan (a logger, a semaphore, SLOs, a maintenance schedule) costs as much
again and check-config needs none of it.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.config.context import build_context
from agent.config.schema import Endpoint
from probes.base import Probe
from probes.registry import PROBES


def tls_warnings(ep: Endpoint) -> list[str]:
    """What building the plan warns about TLS (check-config prints the same lines)."""
    tls = ep.config.tls
    # config.tls applies to DICOM TLS and to every HTTPS probe, so warn whatever enableTLS says
    if not tls.verify:
        return [f"target {ep.id}: TLS certificate verification is OFF (config.tls.verify=false)"]
    if not tls.verifyHostname:
        return [
            f"target {ep.id}: TLS host name verification is OFF (config.tls.verifyHostname=false)"
        ]
    return []


def build_probes(ep: Endpoint, warn: Callable[[str], None]) -> dict[str, Probe]:
    """The probes the target runs, in run order; `warn` gets the builders' configuration
    warnings, already prefixed with `target ID: `."""
    ctx = build_context(ep, warn=lambda text: warn(f"target {ep.id}: {text}"))
    probes: dict[str, Probe] = {}
    for name, spec in PROBES.items():  # run order
        settings = getattr(ep.probes, name)
        if settings is None:  # an optional probe's block is absent: off
            continue
        probe = spec.build(settings, ctx)
        if probe is not None:
            probes[name] = probe
    return probes


def selected_probes(ep: Endpoint, warn: Callable[[str], None]) -> tuple[str, ...]:
    """The names of the probes build_plan(ep) builds, in run order."""
    return tuple(build_probes(ep, warn))
