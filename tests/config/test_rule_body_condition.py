from tests.config.common import minimal, problems


def test_body_regex_must_compile() -> None:
    [p] = problems(minimal(probes={"api_ping": {"body": {"regex": "("}}}))
    assert "probes.api_ping.body" in p and "invalid regular expression" in p


def test_body_needs_exactly_one_condition() -> None:
    [p] = problems(minimal(probes={"api_ping": {"body": {}}}))
    assert "either jsonField" in p
