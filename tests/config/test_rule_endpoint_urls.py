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


def test_the_fast_path_answers_as_the_full_check() -> None:
    """url_problem decides common URLs with one regex; it must agree with the full check (urlsplit,
    the port, IDNA, the host-name rules) on common and awkward URLs alike."""
    from probes.addresses import full_url_problem, url_problem

    long_label = "a" * 63
    urls = [
        "https://pacs.example.org",
        "https://pacs.example.org/",
        "https://pacs.example.org.:443/x?y#z",
        "http://127.0.0.1:8080/api",
        "http://h:1",
        "http://h:65535",
        "http://h:65536",
        "http://h:0",
        "http://h:00080/",
        "http://h:99999",
        "http://h:",
        "http://h:80x",
        "http://h:８０/",
        "http://a..b/",
        "http://-a.example/",
        "http://a-.example/",
        "http://a_b.example/",
        "http://" + long_label + ".example/",
        "http://" + long_label + "a.example/",
        "http://" + ".".join([long_label] * 4) + "/",
        "http://" + ".".join([long_label] * 3) + "." + "b" * 61 + ":80/",
        "http://" + ".".join([long_label] * 3) + "." + "b" * 61 + "./",
        "http://user:pw@h.example/",
        "http://h.example\\x/",
        "http://h.example\t/",
        "http://[::1]:8080/x",
        "http://[::1",
        "http://ex%41mple/",
        "http://:8080/",
        "https://ümlaut.example/",
        "https://viewer.example.org/?a={b}",
        "https://h.example#frag",
        "https://h.example?q",
        "https://h.example\n",
        "https://h.example:80\n",
        "https://h.exa\nmple/",
    ]
    for url in urls:
        assert url_problem(url) == full_url_problem(url), url
