from tests.config.common import minimal, problems


def test_sectra_config_and_its_misspelling_together_are_rejected() -> None:
    doc = minimal(sectraConfig={}, secttraConfig={})
    [p] = problems(doc)
    assert "secttraConfig" in p and "not both" in p
