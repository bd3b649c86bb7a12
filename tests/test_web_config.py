"""--web.config.file: exporter-toolkit TLS, client certificates and bcrypt basic auth."""

from __future__ import annotations

import ssl
from pathlib import Path

import bcrypt
import httpx
import pytest
import trustme

from agent.simulator import SimulatedPACS
from agent.web_config import WebConfigError, load_web_config
from tests.agent_fixtures import running_agent


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def write_web(tmp_path: Path, ca: trustme.CA, body: str) -> str:
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    p = tmp_path / "web.yml"
    p.write_text(body)
    return str(p)


def agent_with(web_path: str):  # noqa: ANN201
    sim = SimulatedPACS().start()
    ctx = running_agent(
        [sim.endpoint_config(interval_ms=1000)],
        {"selfProbe": {"enabled": False}},
        web=load_web_config(web_path),
    )
    return sim, ctx


def test_tls_and_basic_auth(tmp_path: Path, ca: trustme.CA) -> None:
    hashed = bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt(rounds=4)).decode()
    path = write_web(
        tmp_path,
        ca,
        f"""
tls_server_config:
  cert_file: server.crt
  key_file: server.key
basic_auth_users:
  prometheus: {hashed}
""",
    )
    sim, ctx = agent_with(path)
    with ctx as svc:
        port = svc.address[1]
        url = f"https://127.0.0.1:{port}"
        verify = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        assert httpx.get(url + "/metrics", verify=verify).status_code == 401
        assert (
            httpx.get(url + "/metrics", verify=verify, auth=("prometheus", "wrong")).status_code
            == 401
        )
        r = httpx.get(url + "/metrics", verify=verify, auth=("prometheus", "s3cret-pass"))
        assert r.status_code == 200 and "pacs_agent_info" in r.text
        assert httpx.get(url + "/health", verify=verify).status_code == 401
        # kubelet probes: open
        assert httpx.get(url + "/-/healthy", verify=verify).status_code == 200
        with pytest.raises(httpx.ConnectError):  # an untrusted server certificate is refused
            httpx.get(url + "/-/healthy", verify=ssl.create_default_context())
        with pytest.raises(httpx.HTTPError):  # plain HTTP gets nothing
            httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    sim.stop()


def test_client_certificate_required(tmp_path: Path, ca: trustme.CA) -> None:
    path = write_web(
        tmp_path,
        ca,
        """
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
""",
    )
    client = ca.issue_cert("prometheus-client")
    client.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    sim, ctx = agent_with(path)
    with ctx as svc:
        url = f"https://127.0.0.1:{svc.address[1]}/metrics"
        no_cert = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, verify=no_cert)
        with_cert = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        with_cert.load_cert_chain(str(tmp_path / "client.pem"))
        assert httpx.get(url, verify=with_cert).status_code == 200
    sim.stop()


def test_invalid_web_config_is_rejected(tmp_path: Path) -> None:
    p = tmp_path / "web.yml"
    p.write_text("basic_auth_user: {}\n")
    with pytest.raises(WebConfigError, match="basic_auth_user"):
        load_web_config(str(p))
    p.write_text("tls_server_config: {cert_file: nope.crt, key_file: nope.key}\n")
    with pytest.raises(WebConfigError, match="unusable"):
        load_web_config(str(p))
