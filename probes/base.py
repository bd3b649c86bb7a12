"""The probe contract: ProbeResult, the fixed set of failure reasons, deadlines, phase timing.

Modelled on blackbox_exporter's prober contract: a probe is a function of (target, deadline) that
returns success or a bounded failure reason, plus per-phase timings.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol


class Reason(enum.StrEnum):
    """Failure reasons: a fixed, documented set (docs/metrics.md). Never free text in a label."""

    DNS = "dns"
    REFUSED = "refused"
    CONNECT_TIMEOUT = "connect_timeout"
    TLS = "tls"
    REJECTED = "rejected"
    ABORTED = "aborted"
    TIMEOUT = "timeout"
    DIMSE_STATUS = "dimse_status"
    HTTP_STATUS = "http_status"
    INVALID_RESPONSE = "invalid_response"
    UNEXPECTED_RESULT = "unexpected_result"
    ERROR = "error"


class ProbeError(Exception):
    """Raised inside a probe to end the run with a reason. The message must hold no PHI/secret.

    `facts`: what the failed run still found (a DIMSE status label, the contexts refused)."""

    def __init__(self, reason: Reason, message: str, facts: Facts | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.facts = facts if facts is not None else Facts()


class Deadline:
    """An absolute monotonic deadline; every wait in a probe is bounded by it."""

    def __init__(self, seconds: float, *, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self.budget = seconds
        self.at = clock() + seconds

    def remaining(self) -> float:
        return self.at - self._clock()

    def left_or_raise(self, reason: Reason = Reason.TIMEOUT, what: str = "deadline") -> float:
        """Seconds left, or ProbeError(reason) when the deadline has passed."""
        left = self.remaining()
        if left <= 0:
            raise ProbeError(reason, f"{what}: no answer within {self.budget * 1000:.0f} ms")
        return left

    def sub(self, seconds: float) -> Deadline:
        """A deadline no later than this one (for one attempt or one endpoint)."""
        d = Deadline(min(seconds, max(self.remaining(), 0.0)), clock=self._clock)
        return d


class Phases:
    """Per-phase durations in seconds, measured with perf_counter at the socket."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.values[name] = self.values.get(name, 0.0) + seconds

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)

    def total(self) -> float:
        # first_match is a marker inside dimse, not a separate span
        return sum(v for k, v in self.values.items() if k not in NON_ADDITIVE_PHASES)


# Phases reported for insight that overlap another phase, so they are not summed into the duration.
NON_ADDITIVE_PHASES = frozenset({"first_match", "first_image"})


@dataclass(frozen=True)
class TLSInfo:
    """What a TLS handshake revealed about the peer's certificates (unix timestamps)."""

    leaf_not_after: float
    earliest_not_after: float  # over the verified chain: an intermediate may expire first
    version: str | None = None  # negotiated protocol, e.g. "TLS 1.3"


@dataclass(frozen=True)
class Facts:
    """What a run found beyond pass/fail, typed: counts and states, never patient data.

    A probe fills the fields its registry entry lists as outputs; None means "not measured".
    Exporters and renderers read fields, never a probe's name: a new probe that reports
    `matches` is shown wherever matches are shown.
    """

    http_status: int | None = None  # the final HTTP status (api_ping, viewer)
    dicom_status: str | None = None  # bounded label of a DIMSE status/rejection (dicom_status)
    matches: int | None = None  # C-FIND/worklist/QIDO-RS matches counted (not their content)
    capped: bool | None = None  # matches stopped at maxResults
    instances: int | None = None  # instances retrieved / listed
    size_bytes: int | None = None  # bytes retrieved or stored (JSON: "bytes")
    worklist_status: int | None = None  # viewer's worklist fetch: status and size only
    worklist_bytes: int | None = None
    active_endpoint: str | None = None  # failover: the node serving (primary, secondary, ...)
    endpoints_up: Mapping[str, bool] | None = None  # failover: each node's up/down
    # dicom_capabilities: (SOP class UID, transfer syntax UID, accepted) per proposed pair
    contexts: tuple[tuple[str, str, bool], ...] | None = None
    accepted: int | None = None  # dicom_capabilities: pairs accepted of `proposed`
    proposed: int | None = None

    def measured(self) -> dict[str, Any]:
        """The fields a run filled, by field name."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}


@dataclass
class ProbeResult:
    """One run of one probe against one target. `facts` and `message` never hold PHI or secrets."""

    target: str
    probe: str
    ok: bool
    reason: Reason | None
    message: str
    phases: dict[str, float]
    duration: float
    started_at: datetime
    attempts: int = 1
    warning: str | None = None
    tls: TLSInfo | None = None
    facts: Facts = field(default_factory=Facts)
    # a failed run's wall time, retries included (a refused connection has no phases to sum)
    elapsed: float | None = None

    @staticmethod
    def now() -> datetime:
        return datetime.now(UTC)


class Probe(Protocol):
    """The prober contract. `name` is one of the documented probe names."""

    name: str

    def run(self, deadline: Deadline, phases: Phases) -> ProbeOutcome:  # pragma: no cover
        ...


@dataclass
class ProbeOutcome:
    """What a probe's run() returns on success; failures raise ProbeError.

    Phases are filled in by the probe as it goes, so a failure still reports what it measured.
    """

    message: str
    warning: str | None = None
    tls: TLSInfo | None = None
    facts: Facts = field(default_factory=Facts)
