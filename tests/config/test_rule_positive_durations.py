import pytest

from tests.config.common import minimal, problems


@pytest.mark.parametrize("value", [-5, 0, "-3s", "soon", True])
def test_timeout_must_be_a_positive_duration(value: object) -> None:
    [p] = problems(minimal(config={"host": "h", "timeout": value}))
    assert "config.timeout" in p


def test_duration_strings_and_milliseconds_are_equivalent() -> None:
    import json

    from agent.config import load_config_text

    a = load_config_text(json.dumps(minimal(healthCheck={"interval": "30s", "timeout": "500ms"})))
    b = load_config_text(json.dumps(minimal(healthCheck={"interval": 30000, "timeout": 500})))
    assert a.model.targets[0].healthCheck == b.model.targets[0].healthCheck
    assert a.model.targets[0].healthCheck.timeout == 0.5
