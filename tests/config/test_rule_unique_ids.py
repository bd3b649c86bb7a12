from tests.config.common import minimal, problems


def test_duplicate_target_ids_are_rejected() -> None:
    [p] = problems({"targets": [minimal(), minimal()]})
    assert "duplicate target id 't1'" in p


def test_target_id_must_be_label_safe() -> None:
    [p] = problems(minimal(id="has space"))
    assert p.split(": ")[1] == "id"
