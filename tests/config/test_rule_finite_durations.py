"""Durations are finite and sane: NaN, infinity and absurd values are refused at load (they used
to pass check-config and crash `agent run`); timeouts at most a day, intervals at most a week."""

import pytest

from tests.config.common import minimal, problems


@pytest.mark.parametrize(
    "value", ["NaN", "Infinity", "-Infinity", "1e300", pytest.param("1" + "0" * 400, id="10**400")]
)
def test_non_finite_or_huge_json_numbers_are_refused(value: str) -> None:
    text = '{"id": "t1", "config": {"host": "h"}, "healthCheck": {"interval": VALUE}}'
    text = text.replace("VALUE", value)
    [p] = problems(None, json_text=text)
    assert p.startswith("t.json:1: healthCheck.interval: must be"), p


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1.0e+300", "99999999999999999999h"])
def test_non_finite_or_huge_yaml_durations_are_refused(value: str) -> None:
    text = (
        f"targets:\n  - id: t1\n    config: {{host: h}}\n    healthCheck:\n      timeout: {value}\n"
    )
    ps = problems(None, yaml_text=text)
    assert any(p.startswith("t.yaml:5: targets[0].healthCheck.timeout: must be") for p in ps), ps


def test_a_timeout_over_a_day_is_refused() -> None:
    [p] = problems(minimal(config={"host": "h", "timeout": "25h"}))
    assert p.startswith("t.json:") and "config.timeout: must be at most 1 day" in p


def test_an_interval_over_a_week_is_refused() -> None:
    [p] = problems(minimal(healthCheck={"interval": 8 * 86400 * 1000, "timeout": 1000}))
    assert "healthCheck.interval: must be at most 7 days" in p


def test_nan_is_refused_in_plain_numbers_too() -> None:
    text = '{"id": "t1", "config": {"host": "h"}, "retryPolicy": {"backoffMultiplier": NaN}}'
    [p] = problems(None, json_text=text)
    assert "retryPolicy.backoffMultiplier" in p


@pytest.mark.parametrize("value", [True, -1, 0])
def test_bools_and_non_positive_values_are_still_refused(value: object) -> None:
    [p] = problems(minimal(healthCheck={"degradedLatency": value}))
    assert "healthCheck.degradedLatency" in p


def test_a_day_and_a_week_are_accepted() -> None:
    import json

    from agent.config import load_config_text

    doc = minimal(healthCheck={"interval": "168h", "timeout": "24h"})
    loaded = load_config_text(json.dumps(doc), "t.json", {})
    assert loaded.model.targets[0].healthCheck.interval == 7 * 86400
