"""The probe contract: ProbeResult, the fixed set of failure reasons, deadlines, phase timing.

Modelled on blackbox_exporter's prober contract: a probe is a function of (target, deadline) that
returns success or a bounded failure reason, plus per-phase timings.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    """Raised inside a probe to end the run with a reason. The message must hold no PHI/secret."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


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


@dataclass
class ProbeResult:
    """One run of one probe against one target. `detail` and `message` never hold PHI or secrets."""

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
    detail: dict[str, Any] = field(default_factory=dict)

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
    detail: dict[str, Any] = field(default_factory=dict)
