"""A viewer urlTemplate with a placeholder other than {studyInstanceUID}, or with unmatched braces,
is refused at load (it used to raise KeyError in check-config, the probe and `agent run`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import load_config_text
from tests.config.common import ROOT, minimal, problems


def viewer(template: str) -> dict:
    return minimal(
        sectraConfig={"viewerEndpoint": "https://viewer.example.org", "enableWebViewer": True},
        probes={"viewer": {"urlTemplate": template}},
    )


@pytest.mark.parametrize(
    "template",
    [
        "?uid={studyUID}",
        "?uid={}",
        "?uid={0}",
        "?uid={studyInstanceUID!r}",
        "?uid={studyInstanceUID:>9}",
        "?uid={studyInstanceUID",
        "?uid=}",
        "/{a.b}",
    ],
)
def test_unknown_placeholders_and_broken_braces_are_refused(template: str) -> None:
    [p] = problems(viewer(template))
    assert p.startswith("t.json:") and ": probes.viewer.urlTemplate: " in p, p


@pytest.mark.parametrize(
    "template", ["?studyUID={studyInstanceUID}", "/study/{studyInstanceUID}?x={{literal}}", "/"]
)
def test_known_placeholder_and_escaped_braces_load(template: str) -> None:
    loaded = load_config_text(json.dumps(viewer(template)), "t.json", {})
    assert loaded.model.targets[0].probes.viewer.urlTemplate == template


def test_check_config_exits_3_not_a_traceback(tmp_path: Path) -> None:
    cfg = tmp_path / "v.json"
    cfg.write_text(json.dumps(viewer("?uid={studyUID}"), indent=2))
    r = subprocess.run(
        [sys.executable, "-m", "agent", "check-config", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 3, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert "probes.viewer.urlTemplate: the only placeholder is {studyInstanceUID}" in r.stderr
