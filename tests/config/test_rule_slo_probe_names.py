"""slo.probes overrides name known probes only; unknown keys inside slo are rejected."""

from tests.config.common import minimal, problems


def test_unknown_probe_in_slo_probes_is_named() -> None:
    [p] = problems(minimal(slo={"probes": {"dicom_fnd": {"availability": 99}}}))
    assert "slo" in p and "'dicom_fnd'" in p and "dicom_find" in p


def test_unknown_key_in_slo_is_rejected() -> None:
    [p] = problems(minimal(slo={"availabilty": 99.9}))
    assert "slo.availabilty: unknown key" in p


def test_unknown_key_in_a_probe_override_is_rejected() -> None:
    [p] = problems(minimal(slo={"probes": {"dicom_echo": {"objective": 99}}}))
    assert "slo.probes.dicom_echo.objective: unknown key" in p
