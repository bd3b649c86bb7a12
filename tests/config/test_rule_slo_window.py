"""slo window is a duration ("30d"; days are a duration unit); the shipped error-budget rules
use 30 days, so another window is refused rather than silently ignored."""

import json

import pytest

from agent.config import load_config_text
from tests.config.common import minimal, problems


@pytest.mark.parametrize("value", ["30d", "720h", 2_592_000_000])
def test_a_30_day_window_loads_in_any_unit(value: object) -> None:
    doc = minimal(slo={"window": value})
    assert load_config_text(json.dumps(doc)).model.targets[0].slo.window == 30 * 86400


@pytest.mark.parametrize("value", ["thirty days", "30x", -1, 0, True])
def test_window_must_be_a_duration(value: object) -> None:
    [p] = problems(minimal(slo={"window": value}))
    assert "slo.window" in p


@pytest.mark.parametrize("value", ["7d", "28d", "1h"])
def test_window_other_than_30_days_is_refused_with_the_reason(value: object) -> None:
    [p] = problems(minimal(slo={"window": value}))
    assert "slo" in p and "30d" in p


def test_days_are_a_duration_unit_everywhere() -> None:
    doc = minimal(config={"host": "h", "timeout": "1d"}, healthCheck={"interval": "1d"})
    t = load_config_text(json.dumps(doc)).model.targets[0]
    assert t.healthCheck.interval == 86400.0
