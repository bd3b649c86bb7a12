"""Every probe the agent can run, in run order: name -> ProbeSpec (probes.specs).

Adding a probe is its module (the probe, its settings model, its builder, its SPEC) and one line
in _BUILT_IN. Everything else derives from PROBES: the config's `probes:` block
(agent.config.schema), the run order of a target's probes (agent.targets.PROBE_ORDER), the
CLI's `--probe` choices and check-config's list. Exporters read probes.base.Facts fields, never a
probe's name, so they need nothing either.
"""

from __future__ import annotations

from typing import Any

from probes import (
    api_ping,
    dicom_capabilities,
    dicom_echo,
    dicom_find,
    dicom_retrieve,
    dicom_store,
    dicomweb,
    failover,
    viewer,
    worklist,
)
from probes.specs import ProbeSpec

PROBES: dict[str, ProbeSpec[Any]] = {}


def register(spec: ProbeSpec[Any]) -> None:
    """Add a probe after the others. The agent reads PROBES when its modules are imported, so a
    probe registered from outside the product must be registered before that."""
    if spec.name in PROBES:
        raise ValueError(f"probe {spec.name!r} is registered already")
    PROBES[spec.name] = spec


_BUILT_IN = (
    dicom_echo.SPEC,
    dicom_find.SPEC,
    api_ping.SPEC,
    viewer.SPEC,
    failover.SPEC,
    dicom_retrieve.SPEC,
    dicom_store.SPEC,
    worklist.SPEC,
    dicom_capabilities.SPEC,
    dicomweb.SPEC,
)
for _spec in _BUILT_IN:
    register(_spec)


def on_by_default(spec: ProbeSpec[Any]) -> bool:
    """Runs without a `probes.NAME` block (when the target has what the probe needs)."""
    return not spec.optional and bool(getattr(spec.settings(), "enabled", True))


def table() -> str:
    """The registry as the Markdown table docs/architecture.md carries (a test compares them)."""
    rows = [
        "| Probe | What it checks | On by default | Facts it fills |",
        "|---|---|---|---|",
    ]
    for spec in PROBES.values():
        facts = ", ".join(f"`{f}`" for f in spec.outputs)
        on = "yes" if on_by_default(spec) else "no"
        rows.append(f"| `{spec.name}` | {spec.description} | {on} | {facts} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(table(), end="")
