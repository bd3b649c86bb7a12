import pytest

from tests.config.common import minimal, problems


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_impossible_port_is_rejected(port: int) -> None:
    [p] = problems(minimal(config={"host": "127.0.0.1", "port": port}))
    assert "config.port" in p
