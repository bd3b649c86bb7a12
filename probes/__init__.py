"""Probes: one module per probe. A probe takes a target and a deadline and returns a ProbeResult.

Probes know nothing of Prometheus, OTLP or scheduling.
"""

from probes.base import Deadline, ProbeError, ProbeResult, Reason

__all__ = ["Deadline", "ProbeError", "ProbeResult", "Reason"]
