"""A compact load (what `agent run`, its workers and a reload use) is the same config as a plain
one, and nothing it keeps was allocated during the parse or the validation: those objects sit
among the parse's freed temporaries, so what the agent keeps of them (strings, numbers the plans
share with the model) would hold that memory for the life of the process. How much memory this
saves is measured in bench/scale/memory.py, not here."""

from __future__ import annotations

import gc
import inspect
import json
import tracemalloc
from pathlib import Path

import pytest
import yaml

import agent.config.loader as loader
from agent.config import LoadedConfig, load_config, load_config_text
from agent.service import plans_for
from agent.shard import Shard
from tests.config.common import ENV, example, minimal

PATHS = [("targets", 0, "config", "host"), ("targets", 1), ()]


def same(a: LoadedConfig, b: LoadedConfig) -> None:
    assert a.model == b.model
    assert a.model.model_dump() == b.model.model_dump()
    assert (a.secrets, a.secttra_targets, a.literal_secrets, a.url_passwords) == (
        b.secrets,
        b.secttra_targets,
        b.literal_secrets,
        b.url_passwords,
    )
    assert a.target_prefix == b.target_prefix and a.source == b.source and a.text == b.text
    assert [a.line(p) for p in PATHS] == [b.line(p) for p in PATHS]


def test_the_example_loads_the_same_compact_or_not() -> None:
    text = json.dumps(example(), indent=2)
    plain = load_config_text(text, "t.json", ENV)
    compact = load_config_text(text, "t.json", ENV, compact=True)
    same(plain, compact)
    assert compact.secrets  # the example's ${VAR} secrets came through
    assert compact.model is not plain.model


def test_secrets_spellings_and_warnings_load_the_same_compact_or_not(tmp_path: Path) -> None:
    first = example()
    first["secttraConfig"]["customHeaders"]["Authorization"] = "Bearer literal-token-77"
    first["secttraConfig"]["apiEndpoint"] = "https://svc:pw-in-url@pacs-api.hospital.com.au"
    second = minimal(id="b", sectraConfig={"apiEndpoint": "https://pacs-api.hospital.com.au"})
    doc = {"targets": [first, second]}
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    plain = load_config(path, ENV)
    compact = load_config(path, ENV, compact=True)
    same(plain, compact)
    assert compact.secttra_targets == frozenset({0})
    assert compact.literal_secrets and compact.url_passwords


def _validate_line() -> int:
    src, first = inspect.getsourcelines(loader.load_config_text)
    return first + next(i for i, ln in enumerate(src) if "AgentConfig.model_validate(" in ln)


@pytest.mark.parametrize("compact", [True, False])
def test_a_compact_load_keeps_nothing_from_the_parse(compact: bool) -> None:
    doc = {"targets": [minimal(id=f"pacs-{i:03d}", name=f"PACS {i}") for i in range(60)]}
    text = yaml.safe_dump(doc)
    validate = (loader.__file__, _validate_line())
    plans_for(load_config_text(text, "t.yaml", {}), Shard(0, 1))  # imports and caches first
    tracemalloc.start(30)
    try:
        loaded = load_config_text(text, "t.yaml", {}, compact=compact)
        plans = plans_for(loaded, Shard(0, 1))
        del loaded  # as `agent run` does once the service has what it needs
        gc.collect()
        snap = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert len(plans) == 60
    from_load = [
        t
        for t in snap.traces
        if any(
            "/yaml/" in f.filename or (f.filename, f.lineno) == validate for f in t.traceback
        )
    ]
    if compact:
        assert from_load == []
    else:  # what the test looks for is there without compaction: the plans hold parsed strings
        assert len(from_load) >= 60
