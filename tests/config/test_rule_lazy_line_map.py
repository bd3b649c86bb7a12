"""A valid config is loaded without building the path-to-line map (it used to be built for every
load, JSON parsed a second time as YAML: most of check-config's cost for 5,000 targets, on every
start and reload); the map is built only to report a problem, and JSON lines come from the JSON
text. check-config's effective config is written without PyYAML's representer and reads back
as the same data. Speed and memory are measured in bench/config_load, not here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import agent.config.source as source
from agent.config import load_config_text
from agent.config.render import dump_yaml
from tests.config.common import ENV, ROOT, example, minimal, problems


@pytest.fixture()
def no_line_maps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    built: list[str] = []

    def refuse(kind: str):
        def build(text: str, *args: object, **kwargs: object) -> dict:
            built.append(kind)
            return {}

        return build

    monkeypatch.setattr(source, "json_lines", refuse("json"))
    monkeypatch.setattr(source, "yaml_lines", refuse("yaml"))
    return built


def test_a_valid_config_builds_no_line_map(no_line_maps: list[str]) -> None:
    doc = {"targets": [minimal(id=f"t{i}") for i in range(50)]}
    load_config_text(json.dumps(doc, indent=2), "t.json", {})
    load_config_text(yaml.safe_dump(doc), "t.yaml", {})
    assert no_line_maps == []


def test_json_problems_get_lines_from_the_json_text() -> None:
    text = json.dumps(
        {"targets": [minimal(), minimal(id="t2", config={"host": "h", "port": 0})]}, indent=2
    )
    [p] = problems(None, json_text=text)
    assert p.startswith("t.json:14: targets[1].config.port: "), p


def test_json_lines_follow_keys_and_list_items() -> None:
    text = '{\n "a": [\n  1,\n  {"b":\n   2}\n ],\n "c": "x\\n"\n}'
    lines = source.json_lines(text)
    assert lines[("a",)] == 2 and lines[("a", 0)] == 3 and lines[("a", 1)] == 4
    assert lines[("a", 1, "b")] == 4 and lines[("c",)] == 7


def test_the_effective_config_reads_back_as_the_same_data() -> None:
    loaded = load_config_text(json.dumps(example()), "e.json", ENV)
    eff = loaded.effective()
    assert yaml.safe_load(dump_yaml(eff)) == eff
    tricky = {
        "a": ["yes", "123", "", " x", "a: b", "#c", "-d", "é", None, 1.5, True, [], {}],
        "b": [{"c": [{"d": [[1]]}]}],
        "1": "null",
        "k": "<redacted>",
    }
    assert yaml.safe_load(dump_yaml(tricky)) == tricky


def test_check_config_prints_yaml_of_the_effective_config(tmp_path: Path) -> None:
    cfg = tmp_path / "e.json"
    cfg.write_text(json.dumps(example()))
    r = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**ENV, "PATH": "/usr/bin"},
    )
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    [t] = shown["targets"]
    assert t["id"] == "sectra-pacs-prod" and t["config"]["credentials"]["password"] == "<redacted>"
    assert t["sectraConfig"]["customHeaders"] == {
        "X-API-Key": "<redacted>",
        "X-Client-ID": "<redacted>",
    }
