"""OTLP push exporter: the Prometheus series as OpenTelemetry metrics, pushed over
gRPC or HTTP/protobuf to an OpenTelemetry Collector.

* Off unless configured: `agent.otlp.enabled: true`, `agent.otlp.endpoint`, or
  OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_METRICS_ENDPOINT. `enabled: false` wins over
  the environment. Nothing ever dials localhost:4317 by surprise.
* The config file wins over the environment; the standard OTEL_* variables fill the gaps
  (docs/otlp.md has the table).
* Exporting runs on the exporter's own `otlp-export` thread, each request and each export
  bounded; a probe result only updates our compact state (series.py), which an export encodes
  as OTLP protobuf (wire.py, no SDK MeterProvider). A down or slow collector never blocks
  probing or /metrics, nothing is queued across failed exports, and failures are counted in
  `pacs_otlp_export_failures_total` by the delivery wrapper and logged at most once a minute.
  The gRPC exporter re-creates its channel after UNAVAILABLE, so export resumes without a
  restart when the collector comes back.
* Names are the dotted equivalents of the Prometheus names, chosen so that the Collector's
  Prometheus translation (unit suffix, `_total` for counters) gives back the /metrics name.

Modules: settings (config + OTEL_* → OTLPSettings), resource, delivery (the SDK exporter and the
wrapper that bounds and counts exports), series (the state: add_target, observe, event),
wire and expo (the protobuf encoding), instruments (OTLPExporter: the catalogue's instruments and
the export thread). Importing them
changes no global state; the SDK log capture is installed when an exporter is built.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from agent.config.schema import OTLPConfig
from agent.otlp.delivery import CountingExporter, FailureLog, install_sdk_log_capture
from agent.otlp.instruments import CARDINALITY_LIMIT, INSTRUMENTS, OTLPExporter
from agent.otlp.resource import build_resource
from agent.otlp.settings import (
    OTLPSettings,
    OTLPSetupError,
    display_url,
    enabled_by,
    resolve_settings,
)


def otlp_from_config(
    cfg: OTLPConfig, *, on_failure: Callable[[], None], shard: str | None = None,
    env: Mapping[str, str] = os.environ,
) -> OTLPExporter | None:
    """The OTLP exporter when configured, else None. Raises OTLPSetupError on unusable settings."""
    settings = resolve_settings(cfg, env)
    if settings is None:
        return None
    return OTLPExporter(settings, on_failure=on_failure, shard=shard)


__all__ = [
    "CARDINALITY_LIMIT",
    "CountingExporter",
    "INSTRUMENTS",
    "FailureLog",
    "OTLPExporter",
    "OTLPSettings",
    "OTLPSetupError",
    "build_resource",
    "display_url",
    "install_sdk_log_capture",
    "enabled_by",
    "otlp_from_config",
    "resolve_settings",
]

