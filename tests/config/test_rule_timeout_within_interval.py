from tests.config.common import minimal, problems


def test_timeout_longer_than_interval_is_rejected() -> None:
    [p] = problems(minimal(healthCheck={"interval": 1000, "timeout": 5000}))
    assert "healthCheck" in p and "timeout must not exceed interval" in p
