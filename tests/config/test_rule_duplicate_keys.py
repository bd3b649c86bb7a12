"""A key given twice is refused: the last would silently win (a second `tls: {verify: false}`
would turn verification off unnoticed)."""

from tests.config.common import problems

JSON = """{
  "id": "t1",
  "config": {
    "host": "127.0.0.1",
    "tls": {"verify": true},
    "tls": {"verify": false}
  }
}
"""

YAML = """\
targets:
  - id: t1
    config:
      host: 127.0.0.1
      tls:
        verify: true
      tls:
        verify: false
"""


def test_duplicate_key_in_json_is_refused_with_its_line() -> None:
    [p] = problems(None, json_text=JSON)
    assert p.startswith("t.json:6: config.tls: duplicate key"), p
    assert "false" not in p


def test_duplicate_key_in_yaml_is_refused_with_its_line() -> None:
    [p] = problems(None, yaml_text=YAML)
    assert p.startswith("t.yaml:7: targets[0].config.tls: duplicate key"), p


def test_duplicate_key_inside_a_list_item_is_refused() -> None:
    text = '{"targets": [{"id": "a", "id": "b", "config": {"host": "h"}}]}'
    [p] = problems(None, json_text=text)
    assert p.startswith("t.json:1: targets[0].id: duplicate key"), p


def test_yaml_merge_keys_still_work_and_may_be_overridden() -> None:
    from agent.config import load_config_text

    text = """\
targets:
  - id: t1
    config:
      <<: {host: 127.0.0.1, port: 104}
      port: 11112
"""
    loaded = load_config_text(text, "t.yaml", {})
    assert loaded.model.targets[0].config.port == 11112
