"""config.tls against real TLS peers on loopback (trustme certificates): serverName for HTTPS
probes too, the negotiated version exported and minVersion "1.3" enforced, and a CA file replaced
in place used by the next plan (a reload)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from agent.runner import run_probe
from probes.base import Reason
from tests.helpers.config import plan, target
from tests.helpers.dicom_scp import DicomSCP, study
from tests.helpers.http_servers import HTTPPeer, Route
from tests.helpers.pipeline import Harness
from tests.helpers.tls import Leaf, TLSMaterial

TID = "pacs-tls-settings"
OTHER_NAME = "pacs.other.example"  # the name in tls_material.for_other_host()


def https_target(base_url: str, **tls: Any) -> dict[str, Any]:
    return target(
        TID,
        only=("api_ping",),
        config={"tls": tls},
        sectra={"apiEndpoint": base_url, "healthCheckEndpoint": "/health"},
    )


def viewer_target(url: str, **tls: Any) -> dict[str, Any]:
    return target(
        TID,
        only=("viewer",),
        config={"tls": tls},
        sectra={"viewerEndpoint": url, "enableWebViewer": True},
    )


def recording_sni(ctx: ssl.SSLContext) -> list[str | None]:
    """Server names the clients sent (SNI), in order."""
    seen: list[str | None] = []

    def callback(_sock: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen.append(name)

    ctx.sni_callback = callback
    return seen


def max_tls12(leaf: Leaf) -> ssl.SSLContext:
    ctx = leaf.server_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# -- config.tls.serverName on HTTPS -----------------------------------------------------------


def test_https_server_name_is_sent_as_sni_and_verified(tls_material: TLSMaterial) -> None:
    ctx = tls_material.for_other_host().server_context()
    sni = recording_sni(ctx)
    ca = str(tls_material.ca_file)
    with HTTPPeer({"/health": Route()}, ssl_context=ctx) as api:
        named = run_probe(
            plan(https_target(api.base_url, caFile=ca, serverName=OTHER_NAME)), "api_ping"
        )
        unnamed = run_probe(plan(https_target(api.base_url, caFile=ca)), "api_ping")
        host = api.received[0].headers.get("Host") if api.received else None
    assert named.ok, named.message
    assert sni[0] == OTHER_NAME
    # the HTTP Host header keeps the URL's host; only SNI and verification use serverName
    assert host == f"127.0.0.1:{api.port}"
    # without serverName the certificate (for pacs.other.example) does not match 127.0.0.1
    assert not unnamed.ok and unnamed.reason == Reason.TLS
    assert "certificate verification failed" in unnamed.message


def test_server_name_applies_to_every_hop_on_the_configured_host(
    tls_material: TLSMaterial,
) -> None:
    ctx = tls_material.for_other_host().server_context()
    routes = {
        "/viewer": Route(status=302, redirect="/viewer/app", body=b"", content_type="text/plain"),
        "/viewer/app": Route(body=b"<html>ok</html>", content_type="text/html"),
    }
    with HTTPPeer(routes, ssl_context=ctx) as web:
        r = run_probe(
            plan(
                viewer_target(
                    web.url("/viewer"), caFile=str(tls_material.ca_file), serverName=OTHER_NAME
                )
            ),
            "viewer",
        )
        hits = dict(web.hits)
    assert r.ok, r.message
    assert hits == {"/viewer": 1, "/viewer/app": 1}


# -- negotiated version, minVersion ------------------------------------------------------------


@pytest.mark.parametrize(("server", "version"), [("default", "TLS 1.3"), ("max12", "TLS 1.2")])
def test_negotiated_version_is_exported(
    server: str, version: str, tls_material: TLSMaterial
) -> None:
    leaf = tls_material.good()
    ctx = leaf.server_context() if server == "default" else max_tls12(leaf)
    with HTTPPeer({"/health": Route()}, ssl_context=ctx) as api:
        h = Harness(plan(https_target(api.base_url, caFile=str(tls_material.ca_file))))
        r, _ = h.run(TID, "api_ping")
    assert r.ok, r.message
    assert r.tls is not None and r.tls.version == version
    assert h.value("probe_tls_version_info", target=TID, probe="api_ping", version=version) == 1.0


@pytest.mark.parametrize("kind", ["https", "dicom"])
def test_min_version_13_against_a_tls12_only_peer_fails_with_reason_tls(
    kind: str, tls_material: TLSMaterial
) -> None:
    ctx = max_tls12(tls_material.good())
    tls = {"caFile": str(tls_material.ca_file), "minVersion": "1.3"}
    if kind == "https":
        with HTTPPeer({"/health": Route()}, ssl_context=ctx) as api:
            r = run_probe(plan(https_target(api.base_url, **tls)), "api_ping")
            assert api.hits == {}  # no request was sent
            # the same peer is fine for the default minimum (1.2): the version is the cause
            ok = run_probe(plan(https_target(api.base_url, caFile=tls["caFile"])), "api_ping")
    else:
        with DicomSCP([study("CANARY001")], ssl_context=ctx) as scp:
            t = target(
                TID, port=scp.port, only=("dicom_echo",), config={"enableTLS": True, "tls": tls}
            )
            r = run_probe(plan(t), "dicom_echo")
            t["config"]["tls"] = {"caFile": tls["caFile"]}
            ok = run_probe(plan(t), "dicom_echo")
    assert ok.ok, ok.message
    assert not r.ok
    assert r.reason == Reason.TLS
    assert "no TLS version in common" in r.message


def test_dicom_tls_version_is_exported(tls_material: TLSMaterial) -> None:
    with DicomSCP([study("CANARY001")], ssl_context=max_tls12(tls_material.good())) as scp:
        t = target(
            TID,
            port=scp.port,
            only=("dicom_echo",),
            config={"enableTLS": True, "tls": {"caFile": str(tls_material.ca_file)}},
        )
        h = Harness(plan(t))
        r, _ = h.run(TID, "dicom_echo")
    assert r.ok, r.message
    assert (
        h.value("probe_tls_version_info", target=TID, probe="dicom_echo", version="TLS 1.2") == 1.0
    )


# -- files replaced in place -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["https", "dicom"])
def test_ca_file_replaced_in_place_is_used_by_the_next_plan(
    kind: str, tls_material: TLSMaterial, tmp_path: Path
) -> None:
    # the peer's certificate comes from the second CA; the CA file first holds the first CA
    cert = tls_material.other_ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(tls_material.ca_file.read_bytes())

    def probe_once() -> Any:
        if kind == "https":
            return run_probe(plan(https_target(api_url, caFile=str(ca_file))), "api_ping")
        t = target(
            TID,
            port=port,
            only=("dicom_echo",),
            config={"enableTLS": True, "tls": {"caFile": str(ca_file)}},
        )
        return run_probe(plan(t), "dicom_echo")

    peer: Any = (
        HTTPPeer({"/health": Route()}, ssl_context=ctx)
        if kind == "https"
        else DicomSCP([study("CANARY001")], ssl_context=ctx)
    )
    with peer:
        api_url = peer.base_url if kind == "https" else ""
        port = peer.port
        before = probe_once()
        ca_file.write_bytes(tls_material.other_ca_file.read_bytes())  # same path, new content
        after = probe_once()
        ca_file.write_bytes(tls_material.ca_file.read_bytes())  # and back
        again = probe_once()
    assert not before.ok and before.reason == Reason.TLS, before.message
    assert after.ok, after.message
    assert not again.ok and again.reason == Reason.TLS, again.message


def test_ca_file_replaced_in_place_is_used_by_the_same_plan(
    tls_material: TLSMaterial, tmp_path: Path
) -> None:
    # no reload at all: the next run of the running plan reads the new CA
    cert = tls_material.other_ca.issue_cert("127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(tls_material.ca_file.read_bytes())
    with HTTPPeer({"/health": Route()}, ssl_context=ctx) as api:
        p = plan(https_target(api.base_url, caFile=str(ca_file)))
        before = run_probe(p, "api_ping")
        ca_file.write_bytes(tls_material.other_ca_file.read_bytes())
        after = run_probe(p, "api_ping")
    assert not before.ok and before.reason == Reason.TLS, before.message
    assert after.ok, after.message


def test_client_certificate_and_key_replaced_in_place_are_used(
    tls_material: TLSMaterial, tmp_path: Path
) -> None:
    # the server requires a client certificate from the first CA
    server = tls_material.good().server_context()
    server.verify_mode = ssl.CERT_REQUIRED
    tls_material.ca.configure_trust(server)
    wrong = tls_material.other_ca.issue_cert("monitor@agent.example")
    right = tls_material.ca.issue_cert("monitor@agent.example")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client.key"

    def install(leaf: Any) -> None:
        cert_file.write_bytes(b"".join(c.bytes() for c in leaf.cert_chain_pems))
        key_file.write_bytes(leaf.private_key_pem.bytes())

    install(wrong)
    with HTTPPeer({"/health": Route()}, ssl_context=server) as api:
        p = plan(
            https_target(
                api.base_url,
                caFile=str(tls_material.ca_file),
                certFile=str(cert_file),
                keyFile=str(key_file),
            )
        )
        before = run_probe(p, "api_ping")
        install(right)
        after = run_probe(p, "api_ping")
        hits = dict(api.hits)
    assert not before.ok, before.message
    assert after.ok, after.message
    assert hits == {"/health": 1}  # only the run with the right certificate got through
