"""`agent ... | head` ends quietly: no BrokenPipeError, the usual exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cli.common import ROOT, dicom_target, env, write_config


def _first_line_then_close(*args: str) -> tuple[str, int, str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env(),
        cwd=ROOT,
    )
    assert p.stdout is not None and p.stderr is not None
    first = p.stdout.readline().decode()
    p.stdout.close()  # like `head -1` exiting
    try:
        err = p.stderr.read().decode()
        code = p.wait(60)
    finally:
        if p.poll() is None:
            p.kill()
    return first, code, err


def test_check_config_into_a_closed_pipe(tmp_path: Path) -> None:
    # far more than a pipe buffer (64 KiB) of output, so the write after `head` left must fail
    cfg = write_config(tmp_path, [dicom_target(104 + i, f"pacs-{i}") for i in range(400)])
    first, code, err = _first_line_then_close("check-config", "--config", str(cfg))
    assert first.startswith("# ")
    assert code == 0
    assert err == ""


def test_probe_once_into_a_closed_pipe(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, [dicom_target(1, f"pacs-{i}") for i in range(300)])
    first, code, err = _first_line_then_close("probe", "--once", "--config", str(cfg))
    assert first.startswith("UNHEALTHY - ")
    assert code == 2
    assert err == ""
