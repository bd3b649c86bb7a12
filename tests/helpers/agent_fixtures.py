"""Start an AgentService in-process on a free loopback port for a test, and read its metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent.config import load_config_text
from agent.redaction import Redactor
from agent.service import AgentService
from agent.shard import Shard


@contextmanager
def running_agent(
    targets: list[dict[str, Any]], agent: dict[str, Any] | None = None,
    env: dict[str, str] | None = None, config_path: str | None = None, web: Any = None,
) -> Iterator[AgentService]:
    doc = {"targets": targets, "agent": {"listen": "127.0.0.1:0", **(agent or {})}}
    loaded = load_config_text(json.dumps(doc), "<test>", env or {})
    svc = AgentService(loaded, shard=Shard(0, 1), redactor=Redactor(loaded.secrets),
                       config_path=config_path, web=web)
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def base_url(svc: AgentService) -> str:
    host, port = svc.address
    return f"http://{host}:{port}"


def scrape(svc: AgentService) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """All samples from /metrics over HTTP: {(name, sorted labels): value}."""
    text = httpx.get(base_url(svc) + "/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))
