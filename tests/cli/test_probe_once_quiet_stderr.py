"""`probe --once` writes nothing to stderr unless -v: retries and state changes are not leaked
by a target's own logLevel."""

from __future__ import annotations

from pathlib import Path

from tests.cli.common import agent, dicom_target, write_config
from tests.helpers.ports import held_refused_port


def _config(tmp_path: Path) -> Path:
    target = dicom_target(
        held_refused_port(),
        retryPolicy={"maxAttempts": 3, "initialDelay": 10},
        monitoring={"logLevel": "DEBUG", "enableLogging": True},
    )
    return write_config(tmp_path, [target])


def test_failures_and_retries_print_nothing_on_stderr(tmp_path: Path) -> None:
    r = agent("probe", "--once", "--config", str(_config(tmp_path)))
    assert r.returncode == 2
    assert r.stderr == ""
    assert "attempts" not in r.stdout.splitlines()[0]


def test_verbose_shows_the_retries(tmp_path: Path) -> None:
    r = agent("probe", "--once", "--config", str(_config(tmp_path)), "-v")
    assert r.returncode == 2
    assert "retrying" in r.stderr
