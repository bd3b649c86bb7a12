"""The OTLP resource: service.*, k8s.* from the downward API, the shard; OTEL_* on top."""


from __future__ import annotations

import functools
import os
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from opentelemetry.sdk.resources import Resource

from agent import __version__
from agent.otlp.settings import DEFAULT_SERVICE_NAME, _env


@functools.cache
def instance_id() -> str:
    """Fixed once per process (on first use, not at import): the same id for every export."""
    return f"{socket.gethostname()}-{os.getpid()}"


K8S_ENV = {
    "K8S_POD_NAME": "k8s.pod.name",
    "K8S_NAMESPACE_NAME": "k8s.namespace.name",
    "K8S_NODE_NAME": "k8s.node.name",
    "K8S_POD_UID": "k8s.pod.uid",
}


def build_resource(shard: str | None = None, env: Mapping[str, str] = os.environ) -> Resource:
    """service.name/version/instance.id and k8s.* (from the chart's downward-API variables).

    Precedence, lowest first: SDK defaults (telemetry.sdk.*), ours, OTEL_RESOURCE_ATTRIBUTES,
    OTEL_SERVICE_NAME.
    """
    ours: dict[str, Any] = {
        "service.name": DEFAULT_SERVICE_NAME,
        "service.version": __version__,
        "service.instance.id": instance_id(),
    }
    for var, key in K8S_ENV.items():
        if v := _env(env, var):
            ours[key] = v
    if shard:
        ours["pacs.agent.shard"] = shard
    # Resource.create lets `ours` override the environment; merging the environment again on
    # top restores the OTel precedence (the operator's variables win).
    return Resource.create(ours).merge(_env_resource(env))


def _env_resource(env: Mapping[str, str]) -> Resource:
    """What the SDK's OTELResourceDetector reads, from `env`."""
    attrs: dict[str, Any] = {}
    for item in (env.get("OTEL_RESOURCE_ATTRIBUTES") or "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attrs[key.strip()] = unquote(value.strip())
    if name := _env(env, "OTEL_SERVICE_NAME"):
        attrs["service.name"] = name
    return Resource(attrs)

