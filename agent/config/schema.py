"""The config schema as pydantic models (unknown keys rejected, types and ranges checked).

Field names are the integration guide's camelCase keys. Every key of the guide's sample is either
honoured or listed as accepted-and-ignored in docs/configuration.md with the reason.
Durations are milliseconds like the guide (`timeout: 30000`) or strings like "30s", "500ms".
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    model_validator,
)

from agent.config.context import build_context
from agent.config.schema_probes import PROBES, ProbesConfig, probe_names
from probes.settings import AETitle, Credentials, HttpUrl, Listen, Strict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(value: Any) -> Any:
    """Milliseconds (number) or "<n>ms|s|m|h|d" → seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of milliseconds or a string like '30s'")
    if isinstance(value, int | float):
        seconds = _finite(value) / 1000.0
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise ValueError("a duration is a number of milliseconds or a string like '30s'")
        seconds = _finite(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError("a duration is a number of milliseconds or a string like '30s'")
    if seconds > MAX_DURATION:
        raise ValueError("must be at most 366 days")
    return seconds


def _finite(value: float | int | str) -> float:
    # NaN and infinity pass a `> 0` check and crash the scheduler later; 10**400 overflows float()
    try:
        f = float(value)
    except OverflowError:
        raise ValueError("must be at most 366 days") from None
    if not math.isfinite(f):
        raise ValueError("must be a finite number")
    return f


def _positive(v: float) -> float:
    if v <= 0:
        raise ValueError("must be greater than zero")
    return v


def _at_most(limit: float, text: str) -> AfterValidator:
    def check(v: float) -> float:
        if v > limit:
            raise ValueError(f"must be at most {text}")
        return v

    return AfterValidator(check)


MAX_DURATION = 366 * 86400.0  # any duration; absurd values are typing mistakes
MAX_TIMEOUT = 86400.0  # timeouts and delays: a probe waiting longer than a day is stuck
MAX_INTERVAL = 7 * 86400.0  # intervals and windows

# Seconds inside the agent, > 0; shown back as milliseconds, the guide's unit.
Duration = Annotated[
    float,
    BeforeValidator(_duration),
    AfterValidator(_positive),
    PlainSerializer(lambda s: round(s * 1000, 3), return_type=float),
]
Timeout = Annotated[Duration, _at_most(MAX_TIMEOUT, "1 day (86400000 ms)")]
Interval = Annotated[Duration, _at_most(MAX_INTERVAL, "7 days (604800000 ms)")]


Port = Annotated[int, Field(ge=1, le=65535)]
# Target ids become Prometheus label values and file names: keep them tame.
TargetId = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]


def _readable_file(value: str, info: ValidationInfo) -> str:
    # Checked at load: a missing CA bundle or key is the agent's mistake, and found at probe time
    # it would fail the probe with reason `tls` and page the PACS owner. `check-config
    # --no-file-checks` validates a config for another machine (a Helm-rendered ConfigMap).
    if info.context is not None and info.context.get("check_files") is False:
        return value
    try:
        with open(value, "rb") as f:
            f.read(1)
    except FileNotFoundError:
        raise ValueError(f"no such file: {value}") from None
    except IsADirectoryError:
        raise ValueError(f"a directory, not a file: {value}") from None
    except OSError as e:
        raise ValueError(f"cannot read {value}: {e.strerror or type(e).__name__}") from None
    return value


# A file path (TLS material): must exist and be readable when the config loads. Not a secret.
ReadableFile = Annotated[str, Field(min_length=1), AfterValidator(_readable_file)]


class TLSConfig(Strict):
    """Not in the guide (it only has `enableTLS`): how to verify and present certificates."""

    caFile: ReadableFile | None = None
    certFile: ReadableFile | None = None
    keyFile: ReadableFile | None = None
    keyPassword: str | None = Field(default=None, repr=False)
    verify: bool = True
    verifyHostname: bool = True
    serverName: str | None = None
    minVersion: Literal["1.2", "1.3"] = "1.2"

    @model_validator(mode="after")
    def _key_with_cert(self) -> TLSConfig:
        if self.keyFile and not self.certFile:
            raise ValueError("keyFile needs certFile")
        return self


class DicomHost(Strict):
    host: str = Field(min_length=1)
    port: Port = 11112
    calledAET: AETitle | None = None


class ConnectionConfig(Strict):
    """The guide's `config` block: the DICOM endpoint."""

    host: str = Field(min_length=1)
    port: Port = 11112
    callingAET: AETitle = "PACS_HEALTH"
    calledAET: AETitle = "ANY-SCP"
    timeout: Timeout = 30.0
    maxConnections: int = Field(default=10, ge=1, le=1000)
    enableTLS: bool = False
    tls: TLSConfig = TLSConfig()
    credentials: Credentials | None = None
    # Not in the guide: further DICOM nodes of the same PACS, tried in order by `failover`.
    secondaryHosts: list[DicomHost] = Field(default_factory=list)


class SectraConfig(Strict):
    apiEndpoint: HttpUrl | None = None
    apiVersion: str | None = None
    worklistEndpoint: HttpUrl | None = None
    viewerEndpoint: HttpUrl | None = None
    enableWebViewer: bool = False
    thumbnailSupport: bool | None = None
    compressionLevel: int | None = Field(default=None, ge=0, le=9)
    preferredTransferSyntax: list[str] = Field(default_factory=list)
    securityLevel: str | None = None
    customHeaders: dict[str, str] = Field(default_factory=dict)
    primaryEndpoint: HttpUrl | None = None
    secondaryEndpoint: HttpUrl | None = None
    failoverTimeout: Timeout | None = None
    healthCheckEndpoint: str = "/health"
    loadBalancing: Literal["ROUND_ROBIN", "ACTIVE_PASSIVE", "NONE"] | None = None


class ConnectionPooling(Strict):
    minConnections: int | None = Field(default=None, ge=0)
    maxConnections: int | None = Field(default=None, ge=1)
    idleTimeout: Interval | None = None
    validationInterval: Interval | None = None


class CompressionSettings(Strict):
    enableJPEG2000: bool | None = None
    enableJPEGLS: bool | None = None
    qualityLevel: int | None = Field(default=None, ge=0, le=100)


class TransferSettings(Strict):
    chunkSize: int | None = Field(default=None, ge=1)
    maxRetries: int | None = Field(default=None, ge=0)
    timeoutPerChunk: Timeout | None = None


class DicomConfig(Strict):
    supportedSOPClasses: list[str] = Field(default_factory=list)
    maxPDUSize: int = Field(default=16384, ge=4096, le=4 * 1024 * 1024)
    enableCompression: bool | None = None
    asyncOperations: int | None = Field(default=None, ge=0)
    networkTimeout: Timeout | None = None
    connectionPooling: ConnectionPooling | None = None
    compressionSettings: CompressionSettings | None = None
    transferSettings: TransferSettings | None = None


class RetryPolicy(Strict):
    maxAttempts: int = Field(default=1, ge=1, le=10)
    backoffMultiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    initialDelay: Timeout = 0.1
    maxDelay: Timeout = 30.0


class HealthCheck(Strict):
    interval: Interval = 30.0
    timeout: Timeout = 5.0
    failureThreshold: int = Field(default=3, ge=1, le=100)
    successThreshold: int = Field(default=2, ge=1, le=100)
    degradedLatency: Timeout = 2.0
    certExpiryWarningDays: float = Field(default=14, ge=0, le=3650)

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> HealthCheck:
        if self.timeout > self.interval:
            raise ValueError("timeout must not exceed interval (runs would overlap)")
        return self


class Monitoring(Strict):
    enableMetrics: bool = True
    enableLogging: bool = True
    logLevel: Literal["DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"] = "INFO"


class MaintenanceWindow(Strict):
    """A planned window: `{from, to}` (ISO 8601) or `{cron, duration}` (recurring, see
    agent/maintenance.py). Probes go on; alerts stay quiet (pacs_target_maintenance)."""

    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    start: datetime | None = Field(default=None, alias="from")
    end: datetime | None = Field(default=None, alias="to")
    cron: str | None = None
    duration: Duration | None = None
    timezone: str | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> MaintenanceWindow:
        if self.cron is not None or self.duration is not None:
            if self.cron is None or self.duration is None or self.start or self.end:
                raise ValueError("a recurring window is {cron, duration} (and nothing else)")
            from agent.maintenance import cron_trigger

            try:
                cron_trigger(self.cron, self.timezone)
            except (ValueError, LookupError) as e:
                raise ValueError(f"invalid cron expression or timezone: {e}") from None
            return self
        if self.start is None or self.end is None:
            raise ValueError("a window is {from, to} (ISO 8601) or {cron, duration}")
        if self.timezone is not None:
            raise ValueError("timezone applies to cron windows; give from/to with an offset")
        from agent.maintenance import aware

        if aware(self.end) <= aware(self.start):
            raise ValueError("`to` must be later than `from`")
        return self


# Service-level objectives (docs/slo.md). Percentages as operators write them: 99.9, not 0.999.
SLO_WINDOW_SECONDS = 30 * 86400.0


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("a percentage is a number such as 99.9")
    return value


Objective = Annotated[
    float, BeforeValidator(_not_bool), Field(gt=0, lt=100, allow_inf_nan=False)
]


class LatencySLO(Strict):
    """`objective` % of successful runs finish within `threshold`."""

    threshold: Duration
    objective: Objective


class ProbeSLO(Strict):
    """A per-probe override inside `slo.probes`: what is given replaces the target's value."""

    availability: Objective | None = None
    latency: LatencySLO | None = None


class SLOConfig(Strict):
    """The target's `slo:` block. Unset availability: 99.5 % for the DICOM probes, none for the
    others; latency off until set; `probes.<name>` overrides per probe."""

    availability: Objective | None = None
    latency: LatencySLO | None = None
    # The burn-rate factors (14.4/6/1) and the budget rules are the SRE workbook's 30-day ones.
    window: Duration = SLO_WINDOW_SECONDS
    probes: dict[str, ProbeSLO] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _window_and_probe_names(self) -> SLOConfig:
        if abs(self.window - SLO_WINDOW_SECONDS) > 1e-6:
            raise ValueError("window: the error budget rules use a 30-day window; give 30d")
        known = probe_names()
        unknown = sorted(set(self.probes) - set(known))
        if unknown:
            raise ValueError(
                f"probes: unknown probe {', '.join(map(repr, unknown))} "
                f"(known: {', '.join(known)})"
            )
        return self


class Endpoint(Strict):
    """One PACS target in the integration guide's format."""

    id: TargetId
    name: str | None = None
    type: str = "PACS"
    vendor: str | None = None
    enabled: bool = True
    config: ConnectionConfig
    sectraConfig: SectraConfig = Field(default_factory=SectraConfig)
    dicomConfig: DicomConfig = Field(default_factory=DicomConfig)
    retryPolicy: RetryPolicy = Field(default_factory=RetryPolicy)
    healthCheck: HealthCheck = Field(default_factory=HealthCheck)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    probes: ProbesConfig = Field(default_factory=ProbesConfig)
    slo: SLOConfig = Field(default_factory=SLOConfig)
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _alias_secttra(cls, data: Any) -> Any:
        # The guide spells it `secttraConfig`; users paste that. Accept both, not both at once.
        if isinstance(data, dict) and "secttraConfig" in data:
            if "sectraConfig" in data:
                raise ValueError("give sectraConfig or its alias secttraConfig, not both")
            data = dict(data)
            data["sectraConfig"] = data.pop("secttraConfig")
        return data

    @model_validator(mode="after")
    def _probes_fit_the_target(self) -> Endpoint:
        # rules between a probe's block and the rest of the target (ProbeSpec.check)
        ctx = None
        for name, spec in PROBES.items():
            settings = getattr(self.probes, name)
            if spec.check is None or settings is None:
                continue
            ctx = ctx or build_context(self)
            try:
                spec.check(settings, ctx)
            except ValueError as e:
                raise ValueError(f"probes.{name}: {e}") from None
        return self


class OTLPConfig(Strict):
    enabled: bool | None = None
    endpoint: str | None = None
    protocol: Literal["grpc", "http/protobuf"] | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    interval: Interval | None = None
    timeout: Timeout | None = None
    insecure: bool | None = None
    certificate: str | None = None


class SelfProbeConfig(Strict):
    enabled: bool = True
    interval: Interval = 10.0


class AgentSettings(Strict):
    listen: Listen = ":9887"
    latencyWindow: Interval = 300.0
    latencyWindowBuckets: int = Field(default=5, ge=1, le=60)
    maxWorkers: int | None = Field(default=None, ge=1, le=1024)
    logLevel: Literal["DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL"] | None = None
    logFormat: Literal["text", "json"] = "text"
    shard: str | None = Field(default=None, pattern=r"^\d+/\d+$")
    selfProbe: SelfProbeConfig = SelfProbeConfig()
    otlp: OTLPConfig = OTLPConfig()


class AgentConfig(Strict):
    targets: list[Endpoint] = Field(min_length=1)
    agent: AgentSettings = Field(default_factory=AgentSettings)

    @model_validator(mode="after")
    def _unique_ids(self) -> AgentConfig:
        seen: set[str] = set()
        for t in self.targets:
            if t.id in seen:
                raise ValueError(f"duplicate target id {t.id!r}")
            seen.add(t.id)
        return self
