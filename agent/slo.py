"""Service-level objectives per (target, probe), resolved from the target's `slo:` block.

Defaults (docs/slo.md): availability 99.5 % for the DICOM probes, none for the others; latency
off until `slo.latency` (or a probe's override) sets it. `slo.probes.<name>` replaces the
target-level value for that probe only. The exporters turn these into
`pacs_slo_objective_ratio` and count `pacs_probe_slow_runs_total` against the threshold.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.config.schema import SLOConfig

DEFAULT_AVAILABILITY = 99.5
DICOM_PROBES = ("dicom_echo", "dicom_find")


@dataclass(frozen=True)
class ProbeObjectives:
    """Objectives as ratios (0.999 for 99.9 %); None where the probe has no such SLO."""

    availability: float | None = None
    latency: float | None = None
    latency_threshold: float | None = None  # seconds

    def ratios(self) -> dict[str, float]:
        """{slo label: objective ratio} of the SLOs this probe has."""
        out: dict[str, float] = {}
        if self.availability is not None:
            out["availability"] = self.availability
        if self.latency is not None:
            out["latency"] = self.latency
        return out

    def is_slow(self, ok: bool, seconds: float) -> bool:
        """A successful run over the latency threshold spends latency budget."""
        return ok and self.latency_threshold is not None and seconds > self.latency_threshold


# Equal objectives are one object: most targets share the defaults, and 15,000 copies at 5,000
# targets held ~2 MB. Bounded by the distinct objectives a config can state.
_SHARED: dict[ProbeObjectives, ProbeObjectives] = {}


def resolve(cfg: SLOConfig, probes: Iterable[str]) -> dict[str, ProbeObjectives]:
    """{probe: objectives} for each probe that has at least one SLO."""
    out: dict[str, ProbeObjectives] = {}
    for p in probes:
        over = cfg.probes.get(p)
        avail = over.availability if over and over.availability is not None else cfg.availability
        if avail is None and p in DICOM_PROBES:
            avail = DEFAULT_AVAILABILITY
        lat = over.latency if over and over.latency is not None else cfg.latency
        obj = ProbeObjectives(
            availability=None if avail is None else round(avail / 100.0, 10),
            latency=None if lat is None else round(lat.objective / 100.0, 10),
            latency_threshold=None if lat is None else lat.threshold,
        )
        if obj.ratios():
            out[p] = _SHARED.setdefault(obj, obj)
    return out
