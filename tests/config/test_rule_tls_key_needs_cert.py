from tests.config.common import minimal, problems


def test_client_key_without_certificate_is_rejected() -> None:
    [p] = problems(minimal(config={"host": "h", "enableTLS": True, "tls": {"keyFile": "k.pem"}}))
    assert "config.tls" in p and "keyFile needs certFile" in p
