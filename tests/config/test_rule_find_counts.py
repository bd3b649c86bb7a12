from tests.config.common import minimal, problems


def test_expected_count_and_min_count_are_exclusive() -> None:
    [p] = problems(
        minimal(probes={"dicom_find": {"patientID": "C1", "expectedCount": 1, "minCount": 1}})
    )
    assert "probes.dicom_find" in p and "not both" in p


def test_negative_expected_count_is_rejected() -> None:
    [p] = problems(minimal(probes={"dicom_find": {"expectedCount": -1}}))
    assert "probes.dicom_find.expectedCount" in p
