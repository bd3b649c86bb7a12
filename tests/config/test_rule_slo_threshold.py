"""slo latency threshold is a positive duration (milliseconds or a string like "2s")."""

import json

import pytest

from agent.config import load_config_text
from tests.config.common import minimal, problems


@pytest.mark.parametrize("value", [0, -5, "-2s", "soon", "2 parsecs", True])
def test_threshold_must_be_a_positive_duration(value: object) -> None:
    [p] = problems(minimal(slo={"latency": {"threshold": value, "objective": 95}}))
    assert "slo.latency.threshold" in p


def test_per_probe_threshold_is_checked_too() -> None:
    doc = minimal(slo={"probes": {"dicom_echo": {"latency": {"threshold": "x", "objective": 9}}}})
    [p] = problems(doc)
    assert "slo.probes.dicom_echo.latency.threshold" in p


def test_threshold_milliseconds_and_strings_are_equivalent() -> None:
    def threshold(v: object) -> float:
        doc = minimal(slo={"latency": {"threshold": v, "objective": 95}})
        lat = load_config_text(json.dumps(doc)).model.targets[0].slo.latency
        assert lat is not None
        return lat.threshold

    assert threshold(2000) == threshold("2s") == threshold("2000ms") == 2.0
