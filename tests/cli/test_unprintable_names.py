"""Names with control characters, newlines or lone surrogates are escaped in the table and the
plugin line: they cannot forge lines, drive the terminal or crash the output."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.common import agent, dicom_target, write_config

EVIL = "evil\x1b[2J\nFAKE: HEALTHY\udc80\ttab"


def test_escaped_in_the_table(tmp_path: Path) -> None:
    target = dicom_target(1, name=EVIL)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"targets": [target]}))  # \udc80 as a JSON escape
    r = agent("probe", "--once", "--config", str(cfg))
    assert "Traceback" not in r.stderr, r.stderr
    if r.returncode == 3:  # refused by the config check: fine, as long as it says so plainly
        assert r.stderr.strip(), "exit 3 without a reason"
        return
    assert r.returncode == 2
    assert "\x1b" not in r.stdout and "\udc80" not in r.stdout
    assert not any(ln.startswith("FAKE") for ln in r.stdout.splitlines())
    assert "evil\\x1b[2J\\nFAKE: HEALTHY\\udc80\\ttab" in r.stdout


def test_escaped_in_check_config(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [dicom_target(104, name=EVIL)])
    r = agent("check-config", "--config", str(cfg))
    assert "Traceback" not in r.stderr, r.stderr
    assert "\x1b" not in r.stdout + r.stderr


def test_printable_function() -> None:
    from agent.cli import printable

    assert printable("plain name é") == "plain name é"
    assert printable("a\nb\x00c\udc80") == "a\\nb\\x00c\\udc80"
