"""--web.config.file: exporter-toolkit TLS, client certificates and bcrypt basic auth; the
agent's own port against hostile clients (password floods, user enumeration, slow drip)."""

from __future__ import annotations

import base64
import select
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import bcrypt
import httpx
import pytest
import trustme

from agent import __version__
from agent.http_server import REQUEST_DEADLINE_S, Endpoints, make_server, serve_in_thread
from agent.simulator import SimulatedPACS
from agent.web_config import WebConfig, WebConfigError, load_web_config
from tests.helpers.agent_fixtures import running_agent


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


# -- the agent's own port under hostile clients ------------------------------------------------

GOOD_PASSWORD = "correct-horse-battery"
# Cost 10, as `htpasswd -nBC 10` makes it: ~60 ms a check, so timing differences are real.
GOOD_HASH = bcrypt.hashpw(GOOD_PASSWORD.encode(), bcrypt.gensalt(rounds=10))


def endpoints() -> Endpoints:
    return Endpoints(
        metrics=lambda: b"pacs_agent_info 1\n",
        health=lambda: (200, {"status": "HEALTHY"}),
        ready=lambda: True,
        reload=lambda: (True, "ok"),
    )


@contextmanager
def auth_server(
    web: WebConfig | None = None, request_deadline: float | None = None
) -> Iterator[str]:
    """The agent's real HTTP server on 127.0.0.1 with user "prometheus"; yields its base URL."""
    web = web or WebConfig(users={"prometheus": GOOD_HASH})
    extra = {} if request_deadline is None else {"request_deadline": request_deadline}
    server = make_server("127.0.0.1:0", endpoints(), web, **extra)
    thread = serve_in_thread(server)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def timed_get(client: httpx.Client, url: str, user: str, password: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    r = client.get(url, auth=(user, password))
    return r.status_code, time.perf_counter() - t0


def test_unknown_user_costs_as_much_as_a_wrong_password() -> None:
    with auth_server() as url, httpx.Client(timeout=10) as client:
        unknown, wrong = [], []
        for i in range(5):  # interleaved, a new password each time (no cached verdict)
            code, t = timed_get(client, url + "/metrics", f"nobody{i}", f"guess-{i}")
            assert code == 401
            unknown.append(t)
            code, t = timed_get(client, url + "/metrics", "prometheus", f"guess-{i}")
            assert code == 401
            wrong.append(t)
    u, w = statistics.median(unknown), statistics.median(wrong)
    assert w > 0.010, f"a cost-10 bcrypt check took {w * 1000:.1f} ms: not checked?"
    # Before: 0.7 ms for an unknown user against 58 ms for a wrong password.
    assert 0.5 < u / w < 2.0, f"unknown user {u * 1000:.1f} ms, wrong password {w * 1000:.1f} ms"


def test_verified_password_is_cached() -> None:
    with auth_server() as url, httpx.Client(timeout=10) as client:
        code, first = timed_get(client, url + "/metrics", "prometheus", GOOD_PASSWORD)
        assert code == 200
        again = []
        for _ in range(5):
            code, t = timed_get(client, url + "/metrics", "prometheus", GOOD_PASSWORD)
            assert code == 200
            again.append(t)
    cached = statistics.median(again)
    # relative: a shared machine slows both; before, every request took 40 ms (Nagle)
    assert cached < first / 3 and cached < 0.1, (first, again)


def test_password_checks_are_bounded_and_excess_gets_429() -> None:
    # One check at a time; a request waits at most 50 ms for it. Cost 13 (~0.5 s a check).
    slow = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=13))
    web = WebConfig(users={"prometheus": slow}, bcrypt_slots=1, bcrypt_wait=0.05)
    n = 4
    start = threading.Barrier(n)

    def attempt(i: int) -> tuple[int, float]:
        with httpx.Client(timeout=30) as client:
            start.wait(timeout=10)
            return timed_get(client, url + "/metrics", "prometheus", f"wrong-{i}")

    with auth_server(web) as url, ThreadPoolExecutor(n) as pool:
        results = list(pool.map(attempt, range(n)))
    codes = sorted(code for code, _ in results)
    assert codes.count(401) >= 1 and codes.count(429) >= 1, codes
    slowest_401 = max(t for code, t in results if code == 401)
    fastest_429 = min(t for code, t in results if code == 429)
    assert fastest_429 < slowest_401, results  # refused without waiting for the check


def test_head_401_has_no_body() -> None:
    with auth_server() as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            # Pipelined: if the 401 to HEAD carried a body, it would precede the second answer.
            s.sendall(
                b"HEAD /metrics HTTP/1.1\r\nHost: a\r\n\r\nGET /-/healthy HTTP/1.1\r\nHost: a\r\n"
                b"Connection: close\r\n\r\n"
            )
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401"), data
    assert b"Content-Length: 13" in head or b"Content-Length:" in head
    assert rest.startswith(b"HTTP/1.1 200"), data


def test_dripping_client_is_closed_at_the_total_deadline() -> None:
    assert REQUEST_DEADLINE_S <= 10  # the default; here 2 s, so the test is short
    deadline = 2.0
    with auth_server(request_deadline=deadline) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            t0 = time.monotonic()
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            closed_after = None
            # One header byte every 0.2 s: far inside the 10 s per-read timeout, forever.
            while time.monotonic() - t0 < deadline + 6:
                readable, _, _ = select.select([s], [], [], 0.2)
                if readable:
                    try:
                        if s.recv(4096) == b"":
                            closed_after = time.monotonic() - t0
                            break
                    except ConnectionResetError:
                        closed_after = time.monotonic() - t0
                        break
                    continue
                try:
                    s.sendall(b"X")
                except (BrokenPipeError, ConnectionResetError):
                    closed_after = time.monotonic() - t0
                    break
    assert closed_after is not None, f"still open {deadline + 6} s after the request started"
    assert deadline - 0.5 < closed_after < deadline + 2.5, closed_after


def test_server_header_does_not_reveal_python() -> None:
    with auth_server() as url:
        r = httpx.get(url + "/-/healthy", timeout=5)
    assert r.status_code == 200
    assert "Python" not in r.headers["server"], r.headers["server"]
    assert r.headers["server"] == f"pacs-health-agent/{__version__}"


def test_password_checks_run_at_the_lowest_cpu_priority() -> None:
    web = WebConfig(users={"prometheus": GOOD_HASH})
    assert not web.authorized("/metrics", "Basic " + base64.b64encode(b"prometheus:no").decode())
    workers = [t for t in threading.enumerate() if t.name.startswith("bcrypt")]
    assert workers
    for worker in workers:
        stat = Path(f"/proc/self/task/{worker.native_id}/stat").read_text()
        nice = int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of proc(5)
        assert nice == 19, stat
