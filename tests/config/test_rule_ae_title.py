import pytest

from tests.config.common import minimal, problems


@pytest.mark.parametrize("aet", ["", "A" * 17, "BAD\\AET", "    "])
def test_ae_title_must_be_valid(aet: str) -> None:
    [p] = problems(minimal(config={"host": "h", "calledAET": aet}))
    assert "config.calledAET" in p
