"""Certificates: HTTPS and DICOM TLS peers on loopback with good, expired, soon-expiring and
wrong-host certificates (trustme); expiry shows in the check state and in the metrics."""

from __future__ import annotations

from typing import Any

import pytest

from agent.evaluator import CheckStatus, HealthState
from probes.base import Facts, Reason
from tests.helpers.config import plan, target
from tests.helpers.dicom_scp import DicomSCP, study
from tests.helpers.http_servers import HTTPPeer, Route
from tests.helpers.pipeline import Harness
from tests.helpers.tls import Leaf, TLSMaterial

TID = "pacs-tls"


def https_target(base_url: str, ca_file: str, **health: Any) -> dict[str, Any]:
    return target(TID, only=("api_ping",), config={"tls": {"caFile": ca_file}},
                  sectra={"apiEndpoint": base_url, "healthCheckEndpoint": "/health"},
                  health=health or None)


def dicom_tls_target(port: int, ca_file: str, probe: str = "dicom_echo",
                     **tls: Any) -> dict[str, Any]:
    return target(TID, port=port, only=(probe,),
                  config={"enableTLS": True, "tls": {"caFile": ca_file, **tls}})


def expiry_metrics(h: Harness, probe: str) -> tuple[float | None, float | None]:
    """(earliest expiry over the verified chain, leaf expiry) as exported."""
    return (h.value("probe_ssl_earliest_cert_expiry", target=TID, probe=probe),
            h.value("pacs_tls_cert_not_after_timestamp_seconds", target=TID, probe=probe))


# -- HTTPS ------------------------------------------------------------------------------------


def test_https_good_certificate_passes_and_exports_its_expiry(tls_material: TLSMaterial) -> None:
    leaf = tls_material.good()
    with HTTPPeer({"/health": Route()}, ssl_context=leaf.server_context()) as api:
        h = Harness(plan(https_target(api.base_url, str(tls_material.ca_file))))
        r, check = h.run(TID, "api_ping")
    assert r.ok, r.message
    assert "tls" in r.phases
    assert check.status == CheckStatus.PASS
    assert r.tls is not None and r.tls.leaf_not_after == leaf.not_after
    assert expiry_metrics(h, "api_ping") == (leaf.earliest_not_after, leaf.not_after)


def test_https_expired_certificate_is_tls(tls_material: TLSMaterial) -> None:
    leaf = tls_material.expired()
    with HTTPPeer({"/health": Route()}, ssl_context=leaf.server_context()) as api:
        h = Harness(plan(https_target(api.base_url, str(tls_material.ca_file))))
        r, _ = h.run(TID, "api_ping")
        assert api.hits == {}  # the request itself was never sent
    assert not r.ok
    assert r.reason == Reason.TLS
    assert "expired" in r.message
    assert h.value("pacs_probe_failures_total", target=TID, probe="api_ping", reason="tls") == 1.0


def test_https_certificate_expiring_in_5_days_warns(tls_material: TLSMaterial) -> None:
    leaf = tls_material.expiring_in(5)
    with HTTPPeer({"/health": Route()}, ssl_context=leaf.server_context()) as api:
        h = Harness(plan(https_target(api.base_url, str(tls_material.ca_file))))
        r, check = h.run(TID, "api_ping")
    assert r.ok, r.message  # the probe succeeds: the certificate is still valid
    assert check.status == CheckStatus.WARN  # certExpiryWarningDays defaults to 14
    assert "certificate expires in" in check.message
    assert h.target_state(TID) == HealthState.DEGRADED
    assert expiry_metrics(h, "api_ping") == (leaf.earliest_not_after, leaf.not_after)


def test_cert_expiry_warning_days_is_configurable(tls_material: TLSMaterial) -> None:
    leaf = tls_material.expiring_in(5)
    with HTTPPeer({"/health": Route()}, ssl_context=leaf.server_context()) as api:
        h = Harness(plan(https_target(api.base_url, str(tls_material.ca_file),
                                      certExpiryWarningDays=3)))
        r, check = h.run(TID, "api_ping")
    assert r.ok, r.message
    assert check.status == CheckStatus.PASS


def test_https_unknown_ca_is_tls(tls_material: TLSMaterial) -> None:
    leaf = tls_material.good()
    with HTTPPeer({"/health": Route()}, ssl_context=leaf.server_context()) as api:
        r, _ = Harness(plan(https_target(api.base_url, str(tls_material.other_ca_file)))).run(
            TID, "api_ping")
    assert not r.ok and r.reason == Reason.TLS


# -- DICOM TLS --------------------------------------------------------------------------------


def tls_scp(leaf: Leaf) -> DicomSCP:
    return DicomSCP([study("CANARY001")], ssl_context=leaf.server_context())


def test_dicom_echo_over_tls_works_with_the_ca_and_reports_expiry(
    tls_material: TLSMaterial,
) -> None:
    leaf = tls_material.good()
    with tls_scp(leaf) as scp:
        h = Harness(plan(dicom_tls_target(scp.port, str(tls_material.ca_file))))
        r, check = h.run(TID, "dicom_echo")
        assert scp.echo_count == 1
    assert r.ok, r.message
    assert {"connect", "tls", "associate", "dimse", "release"} <= set(r.phases)
    assert check.status == CheckStatus.PASS
    assert r.tls is not None
    assert r.tls.leaf_not_after == leaf.not_after
    assert expiry_metrics(h, "dicom_echo") == (leaf.earliest_not_after, leaf.not_after)


def test_dicom_find_over_tls(tls_material: TLSMaterial) -> None:
    leaf = tls_material.good()
    with tls_scp(leaf) as scp:
        t = dicom_tls_target(scp.port, str(tls_material.ca_file), probe="dicom_find")
        t["probes"]["dicom_find"] = {"patientID": "CANARY001", "expectedCount": 1}
        h = Harness(plan(t))
        r, _ = h.run(TID, "dicom_find")
    assert r.ok, r.message
    assert "tls" in r.phases and r.facts == Facts(matches=1)
    assert expiry_metrics(h, "dicom_find") == (leaf.earliest_not_after, leaf.not_after)


def test_dicom_tls_wrong_ca_is_tls(tls_material: TLSMaterial) -> None:
    with tls_scp(tls_material.good()) as scp:
        r, _ = Harness(plan(dicom_tls_target(scp.port, str(tls_material.other_ca_file)))).run(
            TID, "dicom_echo")
        assert scp.echo_count == 0
    assert not r.ok
    assert r.reason == Reason.TLS
    assert "certificate verification failed" in r.message


def test_dicom_tls_wrong_hostname_is_tls(tls_material: TLSMaterial) -> None:
    with tls_scp(tls_material.for_other_host()) as scp:
        h = Harness(plan(dicom_tls_target(scp.port, str(tls_material.ca_file))))
        r, _ = h.run(TID, "dicom_echo")
        assert scp.echo_count == 0
    assert not r.ok
    assert r.reason == Reason.TLS
    assert "certificate verification failed" in r.message


def test_dicom_tls_server_name_setting_matches_the_certificate(tls_material: TLSMaterial) -> None:
    # the same wrong-host certificate is fine when the configured serverName is its name
    with tls_scp(tls_material.for_other_host()) as scp:
        r, _ = Harness(plan(dicom_tls_target(
            scp.port, str(tls_material.ca_file), serverName="pacs.other.example"))).run(
            TID, "dicom_echo")
    assert r.ok, r.message


def test_dicom_tls_expired_is_tls(tls_material: TLSMaterial) -> None:
    with tls_scp(tls_material.expired()) as scp:
        r, _ = Harness(plan(dicom_tls_target(scp.port, str(tls_material.ca_file)))).run(
            TID, "dicom_echo")
    assert not r.ok
    assert r.reason == Reason.TLS
    assert "expired" in r.message


def test_dicom_tls_expiring_in_5_days_warns(tls_material: TLSMaterial) -> None:
    leaf = tls_material.expiring_in(5)
    with tls_scp(leaf) as scp:
        h = Harness(plan(dicom_tls_target(scp.port, str(tls_material.ca_file))))
        r, check = h.run(TID, "dicom_echo")
    assert r.ok, r.message
    assert check.status == CheckStatus.WARN
    assert "certificate expires in" in check.message
    days = float(check.message.split("expires in ")[1].split(" days")[0])
    assert 4.9 <= days <= 5.0
    assert expiry_metrics(h, "dicom_echo") == (leaf.earliest_not_after, leaf.not_after)


def test_tls_client_against_a_plain_dicom_port_is_tls(tls_material: TLSMaterial) -> None:
    with DicomSCP() as plain:
        r, _ = Harness(plan(dicom_tls_target(plain.port, str(tls_material.ca_file)))).run(
            TID, "dicom_echo")
    assert not r.ok
    assert r.reason == Reason.TLS, r.message


@pytest.mark.parametrize("kind", ["dicom", "https"])
def test_unusable_ca_file_is_tls(kind: str, tls_material: TLSMaterial, tmp_path: Any) -> None:
    # The config load refuses a CA file that is not there; these files go bad after the load
    # (a Secret removed or rewritten), which the probe finds on its next run.
    for what in ("removed", "garbage"):
        ca = tmp_path / f"{what}.pem"
        ca.write_bytes(tls_material.ca_file.read_bytes())
        if kind == "dicom":
            with DicomSCP() as scp:
                h = Harness(plan(dicom_tls_target(scp.port, str(ca))))
                _spoil(ca, what)
                r, _ = h.run(TID, "dicom_echo")
        else:
            leaf = tls_material.good()
            with HTTPPeer({"/health": Route()}, ssl_context=leaf.server_context()) as api:
                h = Harness(plan(https_target(api.base_url, str(ca))))
                _spoil(ca, what)
                r, _ = h.run(TID, "api_ping")
        assert not r.ok
        assert r.reason == Reason.TLS, r.message
        assert "TLS settings unusable" in r.message


def _spoil(path: Any, how: str) -> None:
    if how == "removed":
        path.unlink()
    else:
        path.write_text("not a certificate")
