"""caFile, certFile and keyFile must name readable files when the config loads; the error names
the path (a missing file used to pass check-config and fail every probe with reason `tls`,
paging the PACS owner for the agent's mistake)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config_text
from tests.config.common import ROOT, minimal, problems


def tls(**files: str) -> dict:
    return minimal(config={"host": "h", "enableTLS": True, "tls": files})


@pytest.mark.parametrize("key", ["caFile", "certFile", "keyFile"])
def test_a_missing_tls_file_is_refused_naming_the_path(key: str, tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    files = {"certFile": str(cert)} if key == "keyFile" else {}
    missing = str(tmp_path / "nope" / f"{key}.pem")
    [p] = problems(tls(**files, **{key: missing}))
    assert p.startswith("t.json:") and f"config.tls.{key}: no such file: {missing}" in p, p


def test_a_directory_is_not_a_tls_file(tmp_path: Path) -> None:
    [p] = problems(tls(caFile=str(tmp_path)))
    assert f"config.tls.caFile: a directory, not a file: {tmp_path}" in p, p


def test_readable_tls_files_load(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-----BEGIN X-----\n")
    doc = tls(
        caFile=str(tmp_path / "ca.pem"),
        certFile=str(tmp_path / "cert.pem"),
        keyFile=str(tmp_path / "key.pem"),
    )
    loaded = load_config_text(json.dumps(doc), "t.json", {})
    assert loaded.model.targets[0].config.tls.keyFile == str(tmp_path / "key.pem")


def test_check_config_refuses_it_and_no_file_checks_skips_it(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tls(caFile="/nonexistent/pacs-ca.pem"), indent=2))

    def check(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "agent", "check-config", *extra, "--config", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )

    r = check()
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "config.tls.caFile: no such file: /nonexistent/pacs-ca.pem" in r.stderr
    assert check("--no-file-checks").returncode == 0
