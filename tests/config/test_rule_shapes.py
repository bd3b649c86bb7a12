import json

from agent.config import load_config_text
from tests.config.common import minimal, problems


def test_single_object_list_and_targets_document_are_all_accepted() -> None:
    for doc in (minimal(), [minimal()], {"targets": [minimal()]}):
        assert load_config_text(json.dumps(doc)).model.targets[0].id == "t1"


def test_errors_in_a_list_name_the_index() -> None:
    [p] = problems([minimal(), minimal(id="t2", config={"port": 1})])
    assert "[1].config.host: required key is missing" in p


def test_empty_targets_are_rejected() -> None:
    [p] = problems({"targets": []})
    assert p.split(": ")[1] == "targets"
