"""Build targets in the integration guide's format and turn them into plans the real way
(load_config_text → build_plan), so the tests cover the config → probe path too."""

from __future__ import annotations

import json
from typing import Any

from agent.config import load_config_text
from agent.targets import PROBE_ORDER, TargetPlan, build_plan
from tests.helpers import LOOPBACK


def target(
    target_id: str = "pacs-test",
    *,
    host: str = LOOPBACK,
    port: int = 11112,
    called_aet: str = "TEST_PACS",
    timeout_ms: int = 3000,
    interval_ms: int | None = None,
    only: tuple[str, ...] | None = None,
    probes: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    sectra: dict[str, Any] | None = None,
    health: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One endpoint object. `only` switches every other probe off (`probes.NAME.enabled`)."""
    p: dict[str, Any] = {k: dict(v) for k, v in (probes or {}).items()}
    if only is not None:
        for name in PROBE_ORDER:
            if name not in only:
                p.setdefault(name, {})["enabled"] = False
    doc: dict[str, Any] = {
        "id": target_id,
        "name": f"{target_id} (test)",
        "config": {"host": host, "port": port, "callingAET": "PACS_HEALTH",
                   "calledAET": called_aet, **(config or {})},
        "healthCheck": {"interval": interval_ms or max(timeout_ms, 10000), "timeout": timeout_ms,
                        **(health or {})},
        "probes": p,
    }
    if sectra:
        doc["sectraConfig"] = sectra
    if retry:
        doc["retryPolicy"] = retry
    return doc


def plans(*targets: dict[str, Any], env: dict[str, str] | None = None) -> list[TargetPlan]:
    loaded = load_config_text(json.dumps({"targets": list(targets)}), "<test>", env or {})
    return [build_plan(t) for t in loaded.model.targets]


def plan(t: dict[str, Any], env: dict[str, str] | None = None) -> TargetPlan:
    return plans(t, env=env)[0]
