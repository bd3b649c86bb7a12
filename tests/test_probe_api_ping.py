"""api_ping against real HTTP(S) servers on loopback."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from agent.cli_probe import run_once
from agent.redaction import Redactor
from agent.runner import run_probe
from probes.base import ProbeResult, Reason
from tests.helpers.config import plan, plans, target
from tests.helpers.http_servers import HTTPPeer, Route
from tests.helpers.ports import refused_port
from tests.helpers.tls import TLSMaterial

API_KEY = "k3y-for-tests-7d1f0c"


def api_target(base_url: str, *, timeout_ms: int = 3000, api: dict[str, Any] | None = None,
               sectra: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return target(
        only=("api_ping",), timeout_ms=timeout_ms,
        probes={"api_ping": api} if api else None,
        sectra={"apiEndpoint": base_url, "healthCheckEndpoint": "/health", **(sectra or {})},
        **kw,
    )


def ping(t: dict[str, Any], env: dict[str, str] | None = None) -> ProbeResult:
    return run_probe(plan(t, env=env), "api_ping")


def test_custom_headers_are_sent_and_checked_by_the_server() -> None:
    routes = {"/health": Route(require_headers={"X-API-Key": API_KEY, "X-Client": "pacs-health"})}
    with HTTPPeer(routes) as api:
        t = api_target(api.base_url, sectra={
            "customHeaders": {"X-API-Key": "${SECTRA_API_KEY}", "X-Client": "pacs-health"}})
        good = ping(t, env={"SECTRA_API_KEY": API_KEY})
        bad = ping(t, env={"SECTRA_API_KEY": "not-the-key"})
        got = [r.headers for r in api.received]
    assert good.ok, good.message
    assert got[0].get("X-API-Key") == API_KEY and got[0].get("X-Client") == "pacs-health"
    assert not bad.ok and bad.reason == Reason.HTTP_STATUS and "401" in bad.message
    for r in (good, bad):
        assert API_KEY not in r.message + repr(r.facts)


def test_custom_header_secret_is_redacted_from_once_output() -> None:
    routes = {"/health": Route(status=500, require_headers={"X-API-Key": API_KEY})}
    with HTTPPeer(routes) as api:
        t = api_target(api.base_url, sectra={"customHeaders": {"X-API-Key": "${SECTRA_API_KEY}"}})
        doc = run_once(plans(t, env={"SECTRA_API_KEY": API_KEY}), Redactor([API_KEY]))
    assert doc["targets"][0]["checks"][0]["reason"] == "http_status"
    assert API_KEY not in json.dumps(doc)


def test_basic_credentials_are_sent() -> None:
    routes = {"/health": Route(require_basic=("monitor", "pa55-w0rd"))}
    with HTTPPeer(routes) as api:
        creds = {"credentials": {"username": "monitor", "password": "${PACS_PASSWORD}"}}
        good = ping(api_target(api.base_url, config=creds), env={"PACS_PASSWORD": "pa55-w0rd"})
        bad = ping(api_target(api.base_url, config=creds), env={"PACS_PASSWORD": "wrong"})
        auth = api.received[0].headers.get("Authorization", "")
    assert good.ok, good.message
    assert auth.startswith("Basic ")
    assert not bad.ok and bad.reason == Reason.HTTP_STATUS
    assert "pa55-w0rd" not in good.message + bad.message


@pytest.mark.parametrize("status", [200, 202, 204])
def test_default_expected_status_is_any_2xx(status: int) -> None:
    with HTTPPeer({"/health": Route(status=status, body=b"")}) as api:
        r = ping(api_target(api.base_url))
    assert r.ok, r.message
    assert r.facts.http_status == status


@pytest.mark.parametrize("status", [301, 404, 500, 503])
def test_wrong_status_is_http_status(status: int) -> None:
    route = Route(status=status, redirect="/elsewhere") if status == 301 else Route(status=status)
    with HTTPPeer({"/health": route}) as api:
        r = ping(api_target(api.base_url))
    assert not r.ok
    assert r.reason == Reason.HTTP_STATUS
    assert str(status) in r.message


def test_configured_expected_status_list() -> None:
    routes = {"/health": Route(status=200), "/maint": Route(status=503)}
    with HTTPPeer(routes) as api:
        accepts_503 = ping(api_target(api.base_url, api={"path": "/maint",
                                                         "expectedStatus": [200, 503]}))
        only_204 = ping(api_target(api.base_url, api={"expectedStatus": [204]}))
    assert accepts_503.ok, accepts_503.message
    assert not only_204.ok and only_204.reason == Reason.HTTP_STATUS


@pytest.mark.parametrize(
    ("condition", "ok", "reason"),
    [
        ({"jsonField": "status", "equals": "UP"}, True, None),
        ({"jsonField": "components.db.up", "equals": True}, True, None),
        ({"jsonField": "components.nodes.1", "equals": "b"}, True, None),
        ({"jsonField": "status", "equals": "DOWN"}, False, Reason.UNEXPECTED_RESULT),
        ({"jsonField": "no.such.field", "equals": 1}, False, Reason.UNEXPECTED_RESULT),
        ({"regex": r'"status"\s*:\s*"UP"'}, True, None),
        ({"regex": r"^maintenance"}, False, Reason.UNEXPECTED_RESULT),
    ],
)
def test_body_condition(condition: dict[str, Any], ok: bool, reason: Reason | None) -> None:
    body = json.dumps({"status": "UP", "components": {"db": {"up": True}, "nodes": ["a", "b"]}})
    with HTTPPeer({"/health": Route(body=body.encode())}) as api:
        r = ping(api_target(api.base_url, api={"body": condition}))
    assert r.ok is ok, r.message
    assert r.reason == reason


def test_json_condition_on_a_non_json_body_is_invalid_response() -> None:
    with HTTPPeer({"/health": Route(body=b"<html>ok</html>", content_type="text/html")}) as api:
        r = ping(api_target(api.base_url, api={"body": {"jsonField": "status", "equals": "UP"}}))
    assert not r.ok and r.reason == Reason.INVALID_RESPONSE


def test_slow_first_byte_beyond_the_timeout_is_timeout() -> None:
    timeout = 0.8
    with HTTPPeer({"/health": Route(first_byte_delay=5.0)}) as api:
        t0 = time.monotonic()
        r = ping(api_target(api.base_url, timeout_ms=int(timeout * 1000)))
        elapsed = time.monotonic() - t0
    assert not r.ok
    assert r.reason == Reason.TIMEOUT, r.message
    assert timeout - 0.05 <= elapsed < 2 * timeout, elapsed  # at most twice the deadline


def test_https_slow_first_byte_is_timeout_not_tls(tls_material: TLSMaterial) -> None:
    timeout = 0.8
    leaf = tls_material.good()
    routes = {"/health": Route(first_byte_delay=5.0)}
    with HTTPPeer(routes, ssl_context=leaf.server_context()) as api:
        t0 = time.monotonic()
        r = ping(api_target(api.base_url, timeout_ms=int(timeout * 1000),
                            config={"tls": {"caFile": str(tls_material.ca_file)}}))
        elapsed = time.monotonic() - t0
    assert not r.ok
    assert r.reason == Reason.TIMEOUT, r.message
    assert "tls" in r.phases
    assert timeout - 0.05 <= elapsed < 2 * timeout, elapsed  # at most twice the deadline


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_dripping_body_is_cut_at_the_deadline(scheme: str, tls_material: TLSMaterial) -> None:
    """Headers at once, then one byte every 0.2 s: each read is quick, the whole is not."""
    timeout = 1.0
    ctx = tls_material.good().server_context() if scheme == "https" else None
    tls = {"tls": {"caFile": str(tls_material.ca_file)}}
    with HTTPPeer({"/health": Route(body=b"x" * 50, drip_interval=0.2)}, ssl_context=ctx) as api:
        t0 = time.monotonic()
        r = ping(api_target(api.base_url, timeout_ms=int(timeout * 1000), config=tls))
        elapsed = time.monotonic() - t0
    assert not r.ok
    assert r.reason == Reason.TIMEOUT, r.message
    assert elapsed < timeout + 1.0, elapsed
    assert "first_byte" in r.phases


def test_slow_first_byte_within_the_timeout_shows_in_first_byte() -> None:
    with HTTPPeer({"/health": Route(first_byte_delay=0.3)}) as api:
        r = ping(api_target(api.base_url, timeout_ms=5000))
    assert r.ok, r.message
    assert r.phases["first_byte"] >= 0.25
    assert r.phases["connect"] < r.phases["first_byte"]


def test_http_phases() -> None:
    with HTTPPeer({"/health": Route(body=b'{"status":"UP"}' * 1000)}) as api:
        r = ping(api_target(api.base_url))
    assert r.ok, r.message
    assert {"connect", "first_byte", "transfer"} <= set(r.phases), r.phases
    assert "tls" not in r.phases and "dns" not in r.phases  # an IP literal is not resolved
    assert r.duration == pytest.approx(sum(r.phases.values()))


def test_https_phases_include_tls(tls_material: TLSMaterial) -> None:
    leaf = tls_material.good()
    with HTTPPeer({"/health": Route()}, ssl_context=leaf.server_context()) as api:
        r = ping(api_target(api.base_url, config={"tls": {"caFile": str(tls_material.ca_file)}}))
    assert r.ok, r.message
    assert {"connect", "tls", "first_byte", "transfer"} <= set(r.phases), r.phases
    assert r.tls is not None and r.tls.leaf_not_after == leaf.not_after


def test_dns_failure_is_dns() -> None:
    r = ping(api_target("http://pacs-health-test.invalid:8080"))
    assert not r.ok
    assert r.reason == Reason.DNS, r.message


def test_nothing_listening_is_refused() -> None:
    with refused_port() as port:  # bound, not listening: held while the probe runs
        r = ping(api_target(f"http://127.0.0.1:{port}"))
    assert not r.ok
    assert r.reason == Reason.REFUSED, r.message
