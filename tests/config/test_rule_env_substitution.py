import json

from agent.config import load_config_text
from tests.config.common import example, minimal, problems


def test_unset_variable_without_default_names_the_variable_and_field() -> None:
    ps = problems(example(), env={"SECTRA_API_KEY": "k"})
    assert len(ps) == 1
    assert "SECTRA_API_PASSWORD" in ps[0] and "config.credentials.password" in ps[0]
    assert ps[0].startswith("t.json:")


def test_default_is_used_when_unset_and_env_wins_when_set() -> None:
    doc = minimal(config={"host": "${PACS_HOST:-127.0.0.1}", "port": 104})
    assert load_config_text(json.dumps(doc), env={}).model.targets[0].config.host == "127.0.0.1"
    got = load_config_text(json.dumps(doc), env={"PACS_HOST": "pacs.example"})
    assert got.model.targets[0].config.host == "pacs.example"


def test_double_dollar_is_a_literal() -> None:
    doc = minimal(name="cost $${NOT_A_VAR}")
    assert load_config_text(json.dumps(doc), env={}).model.targets[0].name == "cost ${NOT_A_VAR}"
