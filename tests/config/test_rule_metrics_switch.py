"""`agent.metrics.classicHistogram`: off by default, a boolean, and no other key beside it."""

import json

import pytest

from agent.config import load_config_text
from agent.config.schema import MetricsSettings
from tests.config.common import minimal, problems


def settings(agent: dict) -> MetricsSettings:
    doc = {"targets": [minimal()], "agent": agent}
    return load_config_text(json.dumps(doc), "t.json", {}).model.agent.metrics


def test_classic_histogram_is_off_by_default() -> None:
    assert settings({}).classicHistogram is False
    assert settings({"metrics": {}}).classicHistogram is False


def test_classic_histogram_can_be_switched_on() -> None:
    on = settings({"metrics": {"classicHistogram": True}})
    assert on.classicHistogram is True


@pytest.mark.parametrize("value", ["sometimes", 2, [True], {"on": True}])
def test_a_non_boolean_is_refused_in_one_line(value: object) -> None:
    [p] = problems({"targets": [minimal()], "agent": {"metrics": {"classicHistogram": value}}})
    assert "agent.metrics.classicHistogram" in p, p
    assert "\n" not in p


def test_an_unknown_key_beside_it_is_refused() -> None:
    [p] = problems({"targets": [minimal()], "agent": {"metrics": {"nativeHistogram": True}}})
    assert "agent.metrics.nativeHistogram" in p, p
