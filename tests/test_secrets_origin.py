"""Secrets go only to the origin they belong to, against real recording servers on loopback.

`sectraConfig.customHeaders` and `config.credentials` belong to `apiEndpoint`'s origin. Viewer and
failover endpoints get secrets only from their own probe block (`credentials`, `headers`, or
`useApiCredentials: true`), only for their own origin, and no secret follows a redirect to
another origin (another port, another host, or https → http). The worklist (patient data) is not
fetched unless `probes.viewer.worklist` is true.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from agent.config import ConfigError, load_config_text
from agent.runner import run_probe
from agent.targets import build_plan
from probes.base import ProbeResult
from tests.config.common import EXAMPLE
from tests.helpers.config import plan, target
from tests.helpers.http_servers import HTTPPeer, Received, Route
from tests.helpers.tls import TLSMaterial

API_KEY = "api-k3y-0b6d2e"
API_PASSWORD = "api-pa55-91c4"
VIEWER_TOKEN = "viewer-t0ken-5a7f"
VIEWER_PASSWORD = "viewer-pa55-33e1"
ENV = {
    "SECTRA_API_KEY": API_KEY,
    "SECTRA_API_PASSWORD": API_PASSWORD,
    "VIEWER_TOKEN": VIEWER_TOKEN,
    "VIEWER_PASSWORD": VIEWER_PASSWORD,
}
SECRETS = (API_KEY, API_PASSWORD, VIEWER_TOKEN, VIEWER_PASSWORD)
HTML = Route(body=b"<!doctype html><title>viewer</title>", content_type="text/html")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def headers_of(rec: Received) -> dict[str, str]:
    return {k.lower(): v for k, v in rec.headers.items()}


def secrets_in(rec: Received) -> list[str]:
    """Which known secrets (or any Authorization / X-API-Key header) a request carried."""
    h = headers_of(rec)
    found = [s for s in SECRETS if any(s in v for v in h.values())]
    found += [k for k in ("authorization", "x-api-key", "x-viewer-token") if k in h]
    return found


def guide_sample(api_url: str, viewer_url: str, ca_file: str) -> dict[str, Any]:
    """examples/sectra-pacs-prod.json as shipped, its URLs pointed at loopback servers."""
    doc = json.loads(EXAMPLE.read_text())
    sectra = doc["secttraConfig"]
    sectra["apiEndpoint"] = api_url
    sectra["worklistEndpoint"] = api_url + "/worklist"
    sectra["viewerEndpoint"] = viewer_url
    doc["config"]["host"] = "127.0.0.1"
    doc["config"]["tls"] = {"caFile": ca_file}
    doc["probes"] = {"dicom_echo": {"enabled": False}, "dicom_find": {"enabled": False}}
    return doc


def test_guide_sample_sends_api_secrets_only_to_the_api_and_never_fetches_the_worklist(
    tls_material: TLSMaterial,
) -> None:
    ctx = tls_material.good().server_context
    api_routes = {"/health": Route(), "/worklist": Route(body=b'{"items": []}')}
    with (
        HTTPPeer(api_routes, ssl_context=ctx()) as api,
        HTTPPeer({"/": HTML}, ssl_context=ctx()) as viewer,
    ):
        doc = guide_sample(api.base_url, viewer.base_url, str(tls_material.ca_file))
        loaded = load_config_text(json.dumps({"targets": [doc]}), "<sample>", ENV)
        p = build_plan(loaded.model.targets[0])
        assert set(p.probes) == {"api_ping", "viewer"}
        results = [run_probe(p, "api_ping"), run_probe(p, "viewer")]
        api_got, viewer_got = list(api.received), list(viewer.received)
    for r in results:
        assert r.ok, r.message
    # the API gets its own secrets ...
    [health] = api_got
    assert health.path == "/health"
    assert headers_of(health)["x-api-key"] == API_KEY
    assert headers_of(health)["x-client-id"] == "axis-imaging-portal"
    assert headers_of(health)["authorization"] == basic("axis_service", API_PASSWORD)
    # ... the worklist (patient data) is never asked for by default ...
    assert all(not r.path.startswith("/worklist") for r in api_got)
    # ... and the viewer, another origin, gets none of them
    assert viewer_got
    for rec in viewer_got:
        assert secrets_in(rec) == [], rec
        assert "x-client-id" not in headers_of(rec)


def viewer_doc(
    viewer_url: str,
    api_url: str = "http://127.0.0.1:9/api",
    viewer: dict[str, Any] | None = None,
    **tls: Any,
) -> dict[str, Any]:
    return target(
        "sec",
        only=("viewer",),
        config={
            "credentials": {"username": "api_user", "password": "${SECTRA_API_PASSWORD}"},
            **({"tls": tls} if tls else {}),
        },
        sectra={
            "apiEndpoint": api_url,
            "viewerEndpoint": viewer_url,
            "enableWebViewer": True,
            "customHeaders": {"X-API-Key": "${SECTRA_API_KEY}"},
        },
        probes={"viewer": viewer or {}},
    )


OWN = {
    "credentials": {"username": "viewer_user", "password": "${VIEWER_PASSWORD}"},
    "headers": {"X-Viewer-Token": "${VIEWER_TOKEN}"},
}


def view(doc: dict[str, Any]) -> ProbeResult:
    r = run_probe(plan(doc, env=ENV), "viewer")
    assert not any(s in r.message + repr(r.facts) for s in SECRETS)
    return r


def test_viewer_block_credentials_and_headers_go_to_the_viewer() -> None:
    with HTTPPeer({"/viewer": HTML}) as web:
        r = view(viewer_doc(web.url("/viewer"), viewer=OWN))
        [rec] = web.received
    assert r.ok, r.message
    h = headers_of(rec)
    assert h["authorization"] == basic("viewer_user", VIEWER_PASSWORD)
    assert h["x-viewer-token"] == VIEWER_TOKEN
    assert "x-api-key" not in h  # the API's own stay with the API


def test_use_api_credentials_sends_the_apis_secrets_to_the_viewer_origin() -> None:
    with HTTPPeer({"/viewer": HTML}) as web:
        r = view(viewer_doc(web.url("/viewer"), viewer={"useApiCredentials": True}))
        [rec] = web.received
    assert r.ok, r.message
    h = headers_of(rec)
    assert h["authorization"] == basic("api_user", API_PASSWORD)
    assert h["x-api-key"] == API_KEY


def test_use_api_credentials_with_own_credentials_is_a_config_error() -> None:
    doc = viewer_doc("http://127.0.0.1:9/viewer", viewer={"useApiCredentials": True, **OWN})
    with pytest.raises(ConfigError) as e:
        plan(doc, env=ENV)
    assert any("useApiCredentials" in p for p in e.value.problems)


def test_viewer_block_secrets_are_redacted_like_the_apis() -> None:
    doc = viewer_doc("http://127.0.0.1:9/viewer", viewer=OWN)
    loaded = load_config_text(json.dumps({"targets": [doc]}), "<t>", ENV)
    assert {VIEWER_TOKEN, VIEWER_PASSWORD} <= loaded.secrets
    shown = json.dumps(loaded.effective())
    assert VIEWER_TOKEN not in shown and VIEWER_PASSWORD not in shown


# -- redirects ----------------------------------------------------------------------------------


@pytest.mark.parametrize("viewer", [OWN, {"useApiCredentials": True}], ids=["own", "api"])
def test_no_secret_follows_a_redirect_to_another_port(viewer: dict[str, Any]) -> None:
    with (
        HTTPPeer({"/landing": HTML}) as other,
        HTTPPeer(
            {
                "/viewer": Route(
                    status=302, redirect=other.url("/landing"), body=b"", content_type="text/plain"
                )
            }
        ) as web,
    ):
        r = view(viewer_doc(web.url("/viewer"), viewer=viewer))
        [first], [second] = web.received, other.received
    assert r.ok, r.message
    assert secrets_in(first)  # the viewer's own origin got them
    assert secrets_in(second) == [], second.headers


def test_secrets_follow_a_redirect_on_the_same_origin() -> None:
    routes = {
        "/viewer": Route(status=302, redirect="/viewer/app", body=b"", content_type="text/plain"),
        "/viewer/app": HTML,
    }
    with HTTPPeer(routes) as web:
        r = view(viewer_doc(web.url("/viewer"), viewer=OWN))
        got = list(web.received)
    assert r.ok, r.message
    assert [x.path.split("?")[0] for x in got] == ["/viewer", "/viewer/app"]
    assert all(headers_of(x).get("x-viewer-token") == VIEWER_TOKEN for x in got)


def test_no_secret_is_sent_after_an_https_to_http_redirect(tls_material: TLSMaterial) -> None:
    with (
        HTTPPeer({"/landing": HTML}) as plain,
        HTTPPeer(
            {
                "/viewer": Route(
                    status=302, redirect=plain.url("/landing"), body=b"", content_type="text/plain"
                )
            },
            ssl_context=tls_material.good().server_context(),
        ) as web,
    ):
        assert web.base_url.startswith("https://") and plain.base_url.startswith("http://")
        r = view(viewer_doc(web.url("/viewer"), viewer=OWN, caFile=str(tls_material.ca_file)))
        [first], [second] = web.received, plain.received
    assert r.ok, r.message
    assert headers_of(first)["x-viewer-token"] == VIEWER_TOKEN
    assert secrets_in(second) == [], second.headers


def test_secrets_stay_off_once_a_redirect_left_the_origin() -> None:
    # viewer → other origin → back to the viewer's origin: the other origin chose that last URL,
    # so it is not sent the secrets either
    with (
        HTTPPeer(
            {
                "/viewer": Route(
                    status=302, redirect="/set-later", body=b"", content_type="text/plain"
                ),
                "/viewer/app": HTML,
            }
        ) as web,
        HTTPPeer() as other,
    ):
        other.routes["/bounce"] = Route(
            status=302, redirect=web.url("/viewer/app"), body=b"", content_type="text/plain"
        )
        web.routes["/viewer"] = Route(
            status=302, redirect=other.url("/bounce"), body=b"", content_type="text/plain"
        )
        r = view(viewer_doc(web.url("/viewer"), viewer=OWN))
        got = [(x.path.split("?")[0], bool(secrets_in(x))) for x in web.received + other.received]
    assert r.ok, r.message
    assert got == [("/viewer", True), ("/viewer/app", False), ("/bounce", False)]


# -- failover -----------------------------------------------------------------------------------


def failover_doc(primary: str, secondary: str, block: dict[str, Any]) -> dict[str, Any]:
    return target(
        "fo",
        only=("failover",),
        config={"credentials": {"username": "api_user", "password": "${SECTRA_API_PASSWORD}"}},
        sectra={
            "apiEndpoint": "http://127.0.0.1:9",
            "primaryEndpoint": primary,
            "secondaryEndpoint": secondary,
            "customHeaders": {"X-API-Key": "${SECTRA_API_KEY}"},
        },
        probes={"failover": block},
    )


@pytest.mark.parametrize(
    ("block", "want"),
    [
        ({}, None),
        ({"useApiCredentials": True}, API_KEY),
        ({"headers": {"X-API-Key": "${VIEWER_TOKEN}"}}, VIEWER_TOKEN),
    ],
    ids=["default", "api", "own"],
)
def test_failover_endpoints_get_only_what_their_block_gives(
    block: dict[str, Any], want: str | None
) -> None:
    with HTTPPeer({"/health": Route()}) as primary, HTTPPeer({"/health": Route()}) as secondary:
        r = run_probe(
            plan(failover_doc(primary.base_url, secondary.base_url, block), env=ENV), "failover"
        )
        got = [headers_of(x) for x in primary.received + secondary.received]
    assert r.ok, r.message
    assert len(got) == 2  # the secondary is probed on every run too
    for h in got:
        assert h.get("x-api-key") == want
        if want == API_KEY:
            assert h["authorization"] == basic("api_user", API_PASSWORD)
        else:
            assert "authorization" not in h
