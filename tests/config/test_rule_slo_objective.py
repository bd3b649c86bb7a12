"""slo objectives are percentages strictly between 0 and 100 (target level, latency, per probe)."""

import pytest

from tests.config.common import minimal, problems


@pytest.mark.parametrize("value", [0, 100, 100.5, -1, "high", True])
def test_availability_must_be_a_percentage_between_0_and_100(value: object) -> None:
    [p] = problems(minimal(slo={"availability": value}))
    assert "slo.availability" in p


@pytest.mark.parametrize("value", [0, 100, 250, "ninety"])
def test_latency_objective_must_be_a_percentage_between_0_and_100(value: object) -> None:
    [p] = problems(minimal(slo={"latency": {"threshold": "2s", "objective": value}}))
    assert "slo.latency.objective" in p


@pytest.mark.parametrize("value", [0, 100, -0.1])
def test_per_probe_availability_is_checked_too(value: object) -> None:
    [p] = problems(minimal(slo={"probes": {"dicom_find": {"availability": value}}}))
    assert "slo.probes.dicom_find.availability" in p


def test_latency_needs_threshold_and_objective() -> None:
    [p] = problems(minimal(slo={"latency": {"threshold": "2s"}}))
    assert "slo.latency.objective" in p
    [p] = problems(minimal(slo={"latency": {"objective": 95}}))
    assert "slo.latency.threshold" in p


def test_valid_objectives_load() -> None:
    import json

    from agent.config import load_config_text

    doc = minimal(
        slo={
            "availability": 99.9,
            "latency": {"threshold": 2000, "objective": 95},
            "window": "30d",
            "probes": {"dicom_find": {"availability": 99.0}},
        }
    )
    slo = load_config_text(json.dumps(doc)).model.targets[0].slo
    assert slo.availability == 99.9 and slo.latency is not None
    assert slo.latency.objective == 95 and slo.probes["dicom_find"].availability == 99.0
