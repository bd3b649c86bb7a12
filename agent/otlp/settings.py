"""OTLP settings: the config block first, then the standard OTEL_* variables, then defaults."""


from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from opentelemetry.util.re import parse_env_headers

from agent.config.schema import OTLPConfig

log = logging.getLogger("agent.otlp")

DEFAULT_SERVICE_NAME = "pacs-health-agent"
DEFAULT_INTERVAL = 60.0  # s, OTEL_METRIC_EXPORT_INTERVAL's default
DEFAULT_TIMEOUT = 10.0  # s, OTEL_EXPORTER_OTLP_TIMEOUT's default
PROTOCOLS = ("grpc", "http/protobuf")


class OTLPSetupError(ValueError):
    """The OTLP settings cannot be used (bad env value, unreadable certificate). No secrets."""





@dataclass(frozen=True)
class OTLPSettings:
    endpoint: str
    protocol: str
    headers: dict[str, str] = field(repr=False)
    interval: float  # seconds between exports
    timeout: float  # seconds, one request including the SDK exporter's retries; <= interval
    insecure: bool | None = None
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None


def display_url(url: str) -> str:
    """`url` without user:password@ (for log lines)."""
    if "@" not in url:
        return url
    scheme, sep, rest = url.rpartition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"


def _env(env: Mapping[str, str], *names: str) -> str | None:
    for n in names:
        v = env.get(n, "").strip()
        if v:
            return v
    return None


def _env_ms(env: Mapping[str, str], *names: str) -> float | None:
    """Milliseconds (the OpenTelemetry spec's unit for these variables) → seconds."""
    for n in names:
        raw = _env(env, n)
        if raw is None:
            continue
        try:
            v = float(raw) / 1000.0
        except ValueError:
            raise OTLPSetupError(f"{n} must be a number of milliseconds") from None
        if v <= 0:
            raise OTLPSetupError(f"{n} must be greater than zero")
        return v
    return None


def _env_bool(env: Mapping[str, str], *names: str) -> bool | None:
    raw = _env(env, *names)
    return None if raw is None else raw.lower() == "true"


def _http_url(base: str) -> str:
    """A base URL (collector:4318, http://collector:4318/prefix) → its /v1/metrics URL."""
    if "://" not in base:
        base = "http://" + base
    base = base.rstrip("/")
    return base if base.endswith("/v1/metrics") else base + "/v1/metrics"


def enabled_by(cfg: OTLPConfig, env: Mapping[str, str] = os.environ) -> bool:
    """OTLP runs only when configured: config enabled/endpoint or an OTLP endpoint env var."""
    if cfg.enabled is False:
        return False
    if cfg.enabled or cfg.endpoint:
        return True
    if (_env(env, "OTEL_SDK_DISABLED") or "").lower() == "true":
        return False
    if (_env(env, "OTEL_METRICS_EXPORTER") or "").lower() == "none":
        return False
    endpoint = _env(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    return endpoint is not None


def resolve_settings(cfg: OTLPConfig, env: Mapping[str, str] = os.environ) -> OTLPSettings | None:
    """The effective OTLP settings (config first, then OTEL_* variables, then defaults), or None
    when OTLP is off."""
    if not enabled_by(cfg, env):
        return None
    protocol = cfg.protocol or _env(
        env, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
    ) or "grpc"
    if protocol not in PROTOCOLS:
        raise OTLPSetupError(
            f"OTLP protocol {protocol!r} is not supported (use one of {', '.join(PROTOCOLS)})"
        )
    signal_ep = _env(env, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    base_ep = _env(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol == "grpc":
        endpoint = cfg.endpoint or signal_ep or base_ep or "http://localhost:4317"
    elif cfg.endpoint:
        endpoint = _http_url(cfg.endpoint)
    elif signal_ep:
        endpoint = signal_ep  # the signal-specific URL is used as is (OTel spec)
    else:
        endpoint = _http_url(base_ep or "http://localhost:4318")

    headers = parse_env_headers(
        _env(env, "OTEL_EXPORTER_OTLP_METRICS_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS") or "",
        liberal=True,
    )
    # gRPC metadata keys must be lower case (an "Authorization" key fails every export).
    headers = {k.lower(): v for k, v in headers.items()}
    headers.update({k.lower(): v for k, v in cfg.headers.items()})

    interval = cfg.interval or _env_ms(env, "OTEL_METRIC_EXPORT_INTERVAL") or DEFAULT_INTERVAL
    timeout = cfg.timeout or _env_ms(
        env, "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"
    ) or DEFAULT_TIMEOUT
    reader_timeout = _env_ms(env, "OTEL_METRIC_EXPORT_TIMEOUT")
    # An export never outlasts the interval, so exports cannot back up behind a slow collector.
    timeout = min(timeout, interval, reader_timeout or timeout)

    insecure = cfg.insecure
    if insecure is None:
        insecure = _env_bool(
            env, "OTEL_EXPORTER_OTLP_METRICS_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"
        )
    certificate = cfg.certificate or _env(
        env, "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"
    )
    return OTLPSettings(
        endpoint=endpoint,
        protocol=protocol,
        headers=headers,
        interval=interval,
        timeout=timeout,
        insecure=insecure,
        certificate=certificate,
        client_key=_env(
            env, "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "OTEL_EXPORTER_OTLP_CLIENT_KEY"
        ),
        client_certificate=_env(
            env, "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ),
    )

