"""Shared by the one-file-per-rule config tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sectra-pacs-prod.json"
ENV = {"SECTRA_API_PASSWORD": "pw-test", "SECTRA_API_KEY": "key-test"}


def example() -> dict:
    return json.loads(EXAMPLE.read_text())


def problems(doc: object, env: dict | None = None, yaml_text: str | None = None) -> list[str]:
    text = yaml_text if yaml_text is not None else json.dumps(doc, indent=2)
    source = "t.yaml" if yaml_text is not None else "t.json"
    with pytest.raises(ConfigError) as e:
        load_config_text(text, source, ENV if env is None else env)
    return e.value.problems


def minimal(**over: object) -> dict:
    doc: dict = {"id": "t1", "config": {"host": "127.0.0.1", "port": 11112}}
    doc.update(over)
    return doc
