"""Reloads that bring new target ids do not grow the process: a target's logger is an adapter on
one shared logger, not a logging.getLogger() per id (which `logging` caches forever)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx

from agent.simulator import SimulatedPACS
from tests.helpers.agent_fixtures import base_url, running_agent


def test_200_reloads_of_new_ids_create_no_loggers(tmp_path: Path) -> None:
    with SimulatedPACS() as sim:
        cfg = tmp_path / "agent.json"

        def targets(gen: int) -> list[dict]:
            out = []
            for i in range(5):
                doc = sim.endpoint_config(f"t{gen}-{i}", interval_ms=60_000)
                doc["secttraConfig"] = {}
                out.append(doc)
            return out

        cfg.write_text(json.dumps({"targets": targets(0)}))
        with running_agent(targets(0), config_path=str(cfg)) as svc:
            before = set(logging.Logger.manager.loggerDict)
            for gen in range(1, 201):
                cfg.write_text(json.dumps({"targets": targets(gen)}))
                r = httpx.post(base_url(svc) + "/-/reload", timeout=10)
                assert r.status_code == 200, r.text
            grown = set(logging.Logger.manager.loggerDict) - before
            assert not grown, sorted(grown)[:5]
            assert [p.id for p in svc.plans] == [f"t200-{i}" for i in range(5)]
