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


def problems(
    doc: object,
    env: dict | None = None,
    yaml_text: str | None = None,
    json_text: str | None = None,
) -> list[str]:
    """The problems loading `doc` (as JSON), or the given YAML or JSON text, reports."""
    if yaml_text is not None:
        text, source = yaml_text, "t.yaml"
    elif json_text is not None:
        text, source = json_text, "t.json"
    else:
        text, source = json.dumps(doc, indent=2), "t.json"
    with pytest.raises(ConfigError) as e:
        load_config_text(text, source, ENV if env is None else env)
    return e.value.problems


def minimal(**over: object) -> dict:
    doc: dict = {"id": "t1", "config": {"host": "127.0.0.1", "port": 11112}}
    doc.update(over)
    return doc
