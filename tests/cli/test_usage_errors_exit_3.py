"""Usage errors exit 3 (UNKNOWN, as a Nagios plugin must), never argparse's 2 (CRITICAL)."""

from __future__ import annotations

from probes.registry import PROBES
from tests.cli.common import agent


def test_agent_alone_prints_usage_and_exits_3() -> None:
    r = agent()
    assert r.returncode == 3
    assert r.stderr.startswith("usage: agent")
    assert "required" not in r.stderr
    for cmd in ("run", "probe", "check-config"):
        assert cmd in r.stderr
    assert r.stdout == ""


def test_unknown_option_and_missing_required_option_exit_3() -> None:
    assert agent("probe", "--once", "--no-such-option").returncode == 3
    assert agent("check-config").returncode == 3
    assert agent("no-such-command").returncode == 3


def test_unknown_probe_lists_the_valid_names() -> None:
    r = agent("probe", "--once", "--probe", "dicom_ehco")
    assert r.returncode == 3
    for name in PROBES:
        assert name in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_listen_is_a_one_line_usage_error() -> None:
    r = agent("run", "--listen", "127.0.0.1:99999")
    assert r.returncode == 3
    [error] = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert "--listen" in error and "65535" in error


def test_help_and_version_still_exit_0() -> None:
    assert agent("--help").returncode == 0
    assert agent("--version").returncode == 0
