"""Endpoint URLs a probe could not connect to are refused at load (every run used to log "probe
crashed: ValueError"); a password inside a URL is redacted everywhere and warned about."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config_text
from agent.config.warnings import config_warnings
from tests.config.common import ROOT, minimal, problems

FIELDS = [
    "apiEndpoint",
    "viewerEndpoint",
    "worklistEndpoint",
    "primaryEndpoint",
    "secondaryEndpoint",
]


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize(
    "url",
    [
        "http://h:99999",
        "http://h:0",
        "http://h:-1",
        "http://h:80x",
        "http://[::1",
        "http://[zz]:80",
        "https://a..b/",
        "http://ex%41mple/",
        "http://:8080/",
    ],
)
def test_unusable_urls_are_refused(field: str, url: str) -> None:
    [p] = problems(minimal(sectraConfig={field: url}))
    assert p.startswith("t.json:") and f": sectraConfig.{field}: the " in p, p
    assert url not in p


@pytest.mark.parametrize(
    "url",
    [
        "https://pacs.example.org",
        "http://127.0.0.1:8080/api",
        "http://[::1]:8080/x",
        "https://viewer.example.org/?a={b}",
        "https://ümlaut.example/",
    ],
)
def test_usable_urls_load(url: str) -> None:
    doc = minimal(sectraConfig={"apiEndpoint": url})
    assert load_config_text(json.dumps(doc), "t.json", {}).model.targets[0].sectraConfig.apiEndpoint


SECRET = "Pw-in-url-7741"


def url_doc() -> dict:
    return {
        "targets": [
            minimal(sectraConfig={"apiEndpoint": f"https://svc:{SECRET}@api.example.org/v1"})
        ]
    }


def test_a_url_password_is_a_secret_and_warned_about() -> None:
    loaded = load_config_text(json.dumps(url_doc(), indent=2), "t.json", {})
    assert SECRET in loaded.secrets
    [w] = config_warnings(loaded)
    assert w.startswith("t.json:10: targets[0].sectraConfig.apiEndpoint: warning:"), w
    assert "config.credentials" in w and SECRET not in w
    eff = json.dumps(loaded.effective())
    assert SECRET not in eff and "https://svc:<redacted>@api.example.org/v1" in eff


def test_check_config_does_not_print_a_url_password(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(url_doc(), indent=2))
    r = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    assert "svc:<redacted>@api.example.org" in r.stdout
    assert "sectraConfig.apiEndpoint: warning:" in r.stderr
