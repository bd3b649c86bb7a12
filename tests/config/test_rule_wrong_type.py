from tests.config.common import example, problems


def test_wrong_type_is_rejected() -> None:
    doc = example()
    doc["config"]["enableTLS"] = "sometimes"
    [p] = problems(doc)
    assert "config.enableTLS" in p and "bool" in p


def test_value_is_never_echoed_in_errors() -> None:
    doc = example()
    doc["config"]["port"] = "not-a-port-SECRETISH"
    [p] = problems(doc)
    assert "config.port" in p
    assert "SECRETISH" not in p
