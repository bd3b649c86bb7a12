"""An intermediate certificate that expires before the leaf is what counts: the expiry metric,
the check's WARN, for HTTPS and DICOM TLS, against real peers serving a trustme chain
(root → intermediate expiring in 5 days → leaf valid for a year)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.evaluator import CheckStatus, HealthState
from tests.helpers.config import plan, target
from tests.helpers.dicom_scp import DicomSCP, study
from tests.helpers.http_servers import HTTPPeer, Route
from tests.helpers.pipeline import Harness
from tests.helpers.tls import TLSMaterial

TID = "pacs-chain"


def https_target(base_url: str, ca_file: str) -> dict[str, Any]:
    return target(
        TID,
        only=("api_ping",),
        config={"tls": {"caFile": ca_file}},
        sectra={"apiEndpoint": base_url, "healthCheckEndpoint": "/health"},
    )


def dicom_target(port: int, ca_file: str) -> dict[str, Any]:
    return target(
        TID, port=port, only=("dicom_echo",), config={"enableTLS": True, "tls": {"caFile": ca_file}}
    )


@pytest.mark.parametrize("kind", ["https", "dicom"])
def test_intermediate_expiring_before_the_leaf_warns_and_is_the_earliest_expiry(
    kind: str, tls_material: TLSMaterial
) -> None:
    leaf, intermediate_not_after = tls_material.chain_with_intermediate_expiring_in(5)
    assert intermediate_not_after < leaf.not_after - 300 * 86400  # the chain is as intended
    assert leaf.earliest_not_after == intermediate_not_after
    ca = str(tls_material.ca_file)
    if kind == "https":
        probe = "api_ping"
        with HTTPPeer({"/health": Route()}, ssl_context=leaf.server_context()) as api:
            h = Harness(plan(https_target(api.base_url, ca)))
            r, check = h.run(TID, probe)
    else:
        probe = "dicom_echo"
        with DicomSCP([study("CANARY001")], ssl_context=leaf.server_context()) as scp:
            h = Harness(plan(dicom_target(scp.port, ca)))
            r, check = h.run(TID, probe)
    assert r.ok, r.message
    assert r.tls is not None
    assert r.tls.leaf_not_after == leaf.not_after
    assert r.tls.earliest_not_after == intermediate_not_after
    # certExpiryWarningDays defaults to 14: the leaf (a year) alone would PASS
    assert check.status == CheckStatus.WARN, check.message
    assert "certificate expires in" in check.message
    assert h.target_state(TID) == HealthState.DEGRADED
    assert h.value("probe_ssl_earliest_cert_expiry", target=TID, probe=probe) == (
        intermediate_not_after
    )
    assert h.value("pacs_tls_cert_not_after_timestamp_seconds", target=TID, probe=probe) == (
        leaf.not_after
    )
