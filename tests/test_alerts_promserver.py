"""The tests/helpers/promserver.py helper itself: lifecycle, API errors, deadlines, a missing
binary."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers.promserver import (
    PromAPIError,
    PrometheusNotInstalled,
    PromServer,
    find_prometheus,
    prometheus_factory,  # noqa: F401 - pytest fixture
    wait_for,
)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_missing_binary_is_a_clear_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_BIN", "/nonexistent/prometheus")
    with pytest.raises(PrometheusNotInstalled, match="make system-deps"):
        PromServer().start()


def test_binary_is_installed() -> None:
    assert find_prometheus()


def test_wait_for_returns_the_value_or_times_out() -> None:
    values = iter([0, None, "ready"])
    assert wait_for(lambda: next(values), timeout=5, interval=0.01) == "ready"
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="never"):
        wait_for(lambda: False, timeout=0.2, interval=0.01, message="never")
    assert time.monotonic() - start < 2


def test_config_holds_targets_intervals_and_rules(tmp_path: Path) -> None:
    rules = tmp_path / "r.yml"
    rules.write_text("groups: []\n")
    cfg = PromServer(
        ["127.0.0.1:9887"],
        scrape_interval="2s",
        rule_files=[rules],
        job_config={"scheme": "https", "basic_auth": {"username": "u", "password": "p"}},
    ).config()
    assert cfg["global"] == {
        "scrape_interval": "2s",
        "scrape_timeout": "2s",
        "evaluation_interval": "1s",
    }
    assert cfg["rule_files"] == [str(rules.resolve())]
    assert cfg["scrape_configs"][0]["job_name"] == "pacs-health-agent"
    job = cfg["scrape_configs"][0]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9887"]}]
    assert job["scheme"] == "https" and job["basic_auth"]["username"] == "u"


def test_lifecycle_query_and_errors(prometheus_factory: Callable[..., PromServer]) -> None:  # noqa: F811
    prom = prometheus_factory()
    assert prom.url.startswith("http://127.0.0.1:")
    assert prom.query("vector(1)")[0]["value"][1] == "1"
    assert prom.query("scalar(vector(2))")[0]["value"][1] == "2"
    assert prom.alerts() == []
    assert prom.rules() == []
    with pytest.raises(PromAPIError) as err:
        prom.query("rate(up[")
    assert err.value.error_type == "bad_data"
    port, proc = prom.port, prom.proc
    assert port is not None and proc is not None and port_open(port)
    prom.stop()
    assert proc.poll() is not None, "prometheus still running after stop()"
    assert not port_open(port)
    prom.stop()  # idempotent


def test_context_manager_removes_its_temporary_directory() -> None:
    with PromServer() as prom:
        workdir = prom.workdir
        assert workdir is not None and (workdir / "prometheus.yml").exists()
    assert not workdir.exists()
