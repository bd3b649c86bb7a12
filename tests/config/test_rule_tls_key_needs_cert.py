from pathlib import Path

from tests.config.common import minimal, problems


def test_client_key_without_certificate_is_rejected(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    [p] = problems(minimal(config={"host": "h", "enableTLS": True, "tls": {"keyFile": str(key)}}))
    assert "config.tls" in p and "keyFile needs certFile" in p
