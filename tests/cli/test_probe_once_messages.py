"""Failure messages name what failed: the peer that refused, the name that does not resolve, the
answer that did not come and within how long, the file that could not be read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.common import agent, dicom_target, write_config
from tests.helpers.peers import silent_listener
from tests.helpers.ports import held_refused_port


def _checks(tmp_path: Path, target: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cfg = write_config(tmp_path, [target])
    r = agent("probe", "--once", "--config", str(cfg), "--probe", "dicom_echo", "--output", "json")
    assert r.returncode == 2, r.stdout + r.stderr
    return {c["name"]: c for c in json.loads(r.stdout)["targets"][0]["checks"]}


def test_refused_names_host_and_port(tmp_path: Path) -> None:
    port = held_refused_port()
    c = _checks(tmp_path, dicom_target(port))["dicom_echo"]
    assert c["reason"] == "refused"
    assert c["message"] == f"connection refused by 127.0.0.1:{port}"


def test_unresolvable_name_is_named(tmp_path: Path) -> None:
    # .invalid never resolves (RFC 6761)
    c = _checks(tmp_path, dicom_target(104, host="pacs-api.invalid"))["dicom_echo"]
    assert c["reason"] == "dns"
    assert c["message"] == "pacs-api.invalid does not resolve"


def test_silent_peer_says_which_answer_and_how_long(tmp_path: Path) -> None:
    with silent_listener() as port:
        c = _checks(tmp_path, dicom_target(port, timeout_ms=600))["dicom_echo"]
    assert c["reason"] == "timeout"
    assert c["message"] == "no A-ASSOCIATE answer within 600 ms"


def test_unreadable_ca_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    with silent_listener() as port:  # TCP connects; the TLS settings are what fails
        target = dicom_target(port)
        target["config"].update(enableTLS=True, tls={"caFile": str(missing)})
        cfg = write_config(tmp_path, [target])
        r = agent(
            "probe", "--once", "--config", str(cfg), "--probe", "dicom_echo", "--output", "json"
        )
    if r.returncode == 3:  # refused by the config check instead: that must name it too
        assert "caFile" in r.stderr, r.stderr
        return
    assert r.returncode == 2, r.stdout + r.stderr
    [c] = json.loads(r.stdout)["targets"][0]["checks"]
    assert c["reason"] == "tls"
    assert str(missing) in c["message"]
