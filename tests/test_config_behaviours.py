"""Configuration behaviours checked end to end against real peers on loopback:
`config.maxConnections`, `enabled: false`, `monitoring.enableMetrics/enableLogging: false`,
sharding in a running agent (`--shard`, `AGENT_SHARD`, the hostname ordinal), a crashing probe,
a non-default `successThreshold`, and DEGRADED clearing once slow runs leave the window."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from agent.evaluator import CheckStatus, HealthEvaluator, HealthState
from agent.pipeline import Pipeline
from agent.prometheus_exporter import PrometheusExporter
from agent.recorder import LatencyRecorder
from agent.runner import run_probe
from agent.shard import owner
from probes.base import Reason
from tests.helpers import LOOPBACK, wait_until
from tests.helpers.agent_fixtures import running_agent, scrape, total
from tests.helpers.config import plan, target
from tests.helpers.daemon import start_agent
from tests.helpers.pipeline import Harness
from tests.helpers.ports import refused_port

ROOT = Path(__file__).resolve().parents[1]


class CountingSCP:
    """pynetdicom's own Verification SCP: answers after `delay`, records the called AE title of
    every association and the most C-ECHOs it was answering at once.

    Counted inside the C-ECHO handler, not between the connection's open and close events: the
    SCP notices a connection closed only on its next poll, a few ms after the agent has closed it
    and let its next run connect, so open/close overlap says nothing about the agent's cap (it
    read 2 under a cap of 1 in one full run). A C-ECHO answered here lies inside its association,
    and the agent gives a connection back only after that association's release."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.called: list[str] = []
        self.busy = 0
        self.peak = 0
        self._lock = threading.Lock()
        self._release = threading.Event()

    def _on_echo(self, event: Any) -> int:
        with self._lock:
            self.called.append(event.assoc.requestor.ae_title.strip())  # the calling AE
            self.busy += 1
            self.peak = max(self.peak, self.busy)
        try:
            self._release.wait(self.delay)  # the peer's own slowness, bounded; released at stop
        finally:
            with self._lock:
                self.busy -= 1
        return 0

    @contextmanager
    def serve(self) -> Iterator[int]:
        ae = AE(ae_title="ANY")
        ae.add_supported_context(Verification)
        ae.require_called_aet = False
        handlers = [(evt.EVT_C_ECHO, self._on_echo)]
        server = ae.start_server((LOOPBACK, 0), block=False, evt_handlers=handlers)
        try:
            yield int(server.server_address[1])
        finally:
            self._release.set()
            server.shutdown()


def aet(tid: str) -> str:
    return tid.upper().replace("-", "_")[:16]


def echo_target(
    tid: str, port: int, config: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    """A C-ECHO-only target whose calling AE title names it (the peer records who called)."""
    return target(
        tid,
        port=port,
        only=("dicom_echo",),
        config={"callingAET": aet(tid), **(config or {})},
        **kw,
    )


# -- config.maxConnections --------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3])
def test_max_connections_caps_concurrent_associations(limit: int) -> None:
    scp = CountingSCP(delay=0.3)
    with scp.serve() as port:
        p = plan(echo_target("capped", port, timeout_ms=5000, config={"maxConnections": limit}))
        results: list[Any] = []
        threads = [
            threading.Thread(target=lambda: results.append(run_probe(p, "dicom_echo")))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
    assert len(results) == 3 and all(r.ok for r in results), [r.message for r in results]
    assert scp.peak == limit, (scp.peak, limit)  # never more; and the cap is really used


# -- enabled: false, monitoring.enableMetrics / enableLogging: false ----------------------------


def test_disabled_target_is_neither_probed_nor_exported() -> None:
    scp = CountingSCP()
    with scp.serve() as port:
        on = echo_target("on", port, timeout_ms=300, interval_ms=300)
        off = {**echo_target("off", port, timeout_ms=300, interval_ms=300), "enabled": False}
        with running_agent([on, off], {"selfProbe": {"enabled": False}}) as svc:
            wait_until(lambda: total(scrape(svc), "pacs_probe_runs_total", target="on") >= 3, 10)
            s = scrape(svc)
            health = httpx.get(f"http://{svc.address[0]}:{svc.address[1]}/health", timeout=5)
    assert not any(dict(ls).get("target") == "off" for _, ls in s), "series for a disabled target"
    assert "off" not in {t["id"] for t in health.json()["targets"]}
    assert set(scp.called) == {"ON"}, scp.called


def test_enable_metrics_false_probes_but_exports_nothing_for_the_target() -> None:
    scp = CountingSCP()
    with scp.serve() as port:
        shown = echo_target("shown", port, timeout_ms=300, interval_ms=300)
        quiet = {
            **echo_target("quiet", port, timeout_ms=300, interval_ms=300),
            "monitoring": {"enableMetrics": False},
        }
        with running_agent([shown, quiet], {"selfProbe": {"enabled": False}}) as svc:
            wait_until(
                lambda: (
                    scp.called.count("QUIET") >= 2
                    and total(scrape(svc), "pacs_probe_runs_total", target="shown") >= 2
                ),
                10,
            )
            s = scrape(svc)
    assert not any(dict(ls).get("target") == "quiet" for _, ls in s), "metrics for 'quiet'"


def test_enable_logging_false_silences_the_target_logger(caplog: pytest.LogCaptureFixture) -> None:
    noisy = plan(echo_target("noisy", 9, timeout_ms=300, retry={"maxAttempts": 2}))
    silent = plan(
        {
            **echo_target("silent", 9, timeout_ms=300, retry={"maxAttempts": 2}),
            "monitoring": {"enableLogging": False},
        }
    )
    with caplog.at_level(logging.DEBUG):
        run_probe(noisy, "dicom_echo")
        run_probe(silent, "dicom_echo")
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "noisy/dicom_echo" in text  # the control: the retry is logged
    assert "silent/dicom_echo" not in text


# -- sharding in a running agent ------------------------------------------------------------------

IDS = [f"pacs-{i:02d}" for i in range(8)]


def shard_config(tmp_path: Path, port: int) -> Path:
    import json

    cfg = tmp_path / "agent.json"
    cfg.write_text(
        json.dumps(
            {
                "targets": [echo_target(t, port, timeout_ms=400, interval_ms=400) for t in IDS],
                "agent": {"selfProbe": {"enabled": False}},
            }
        )
    )
    return cfg


@pytest.mark.parametrize("how", ["--shard", "AGENT_SHARD", "hostname"])
def test_a_shard_probes_and_exports_only_its_own_targets(how: str, tmp_path: Path) -> None:
    mine = {t for t in IDS if owner(t, 3) == 1}
    assert mine and mine != set(IDS)
    scp = CountingSCP()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_SHARD"))}
    with scp.serve() as scp_port:
        args = ["--config", str(shard_config(tmp_path, scp_port))]
        if how == "--shard":
            args += ["--shard", "1/3"]
        elif how == "AGENT_SHARD":
            env["AGENT_SHARD"] = "1/3"
        else:  # a StatefulSet pod: the ordinal of its hostname, the count from the environment
            env.update(HOSTNAME="pacs-health-agent-1", AGENT_SHARD_COUNT="3")
        with (tmp_path / "agent.log").open("w") as err:
            p, url = start_agent(args, stderr=err, env=env, cwd=ROOT)
            try:

                def all_mine_ran() -> str | None:
                    text = httpx.get(url + "/metrics", timeout=5).text
                    ran = {
                        t
                        for t in mine
                        if f'pacs_probe_runs_total{{target="{t}",probe="dicom_echo",'
                        f'result="success"}} 0.0'
                        not in text
                        and f'"{t}"' in text
                    }
                    return text if ran == mine else None

                text = wait_until(all_mine_ran, 15, 0.1, "every own target probed")
            finally:
                p.terminate()
                p.wait(10)
    exported = {t for t in IDS if f'target="{t}"' in text}
    assert exported == mine, (sorted(exported), sorted(mine))
    probed = {c for c in scp.called}
    assert probed == {aet(t) for t in mine}, sorted(probed)
    assert 'shard="1/3"' in text


# -- a crashing probe is reason `error` ---------------------------------------------------------


class CrashingProbe:
    name = "dicom_echo"

    def run(self, deadline: Any, phases: Any) -> Any:
        raise RuntimeError("bug inside the probe")


def test_a_probe_crash_is_reason_error_and_the_pipeline_goes_on() -> None:
    p = plan(echo_target("crashy", 9, timeout_ms=500))
    p.probes["dicom_echo"] = CrashingProbe()
    h = Harness(p)
    r, check = h.run("crashy", "dicom_echo")
    assert not r.ok and r.reason == Reason.ERROR, (r.reason, r.message)
    assert r.message == "internal error: RuntimeError"  # the type only, never the text
    assert check.status == CheckStatus.WARN
    assert (
        h.value("pacs_probe_failures_total", target="crashy", probe="dicom_echo", reason="error")
        == 1
    )


# -- successThreshold -------------------------------------------------------------------------


def test_non_default_success_threshold_holds_fail_until_enough_successes() -> None:
    scp = CountingSCP()
    health = {"failureThreshold": 1, "successThreshold": 3}
    with scp.serve() as port, refused_port() as dead:
        down = plan(echo_target("flappy", dead, timeout_ms=1000, health=health))
        up = plan(echo_target("flappy", port, timeout_ms=1000, health=health))
        h = Harness(down)
        r, check = h.run("flappy", "dicom_echo")
        assert not r.ok and check.status == CheckStatus.FAIL  # failureThreshold 1
        h.plans["flappy"] = up  # the PACS is back: same target, same evaluator
        statuses = [h.run("flappy", "dicom_echo")[1].status for _ in range(3)]
    assert statuses == [CheckStatus.FAIL, CheckStatus.FAIL, CheckStatus.PASS], statuses
    assert h.target_state("flappy") == HealthState.HEALTHY


# -- DEGRADED clears as slow runs age out of the latency window -----------------------------------


def test_degraded_clears_once_slow_runs_leave_the_window() -> None:
    window = 1.2  # seconds, two sub-windows of 0.6 s: the agent's recorder, real clock
    slow, fast = CountingSCP(delay=0.25), CountingSCP()
    with slow.serve() as slow_port, fast.serve() as fast_port:
        t_slow = echo_target("lat", slow_port, timeout_ms=2000, health={"degradedLatency": 150})
        p_slow = plan(t_slow)
        p_fast = plan({**t_slow, "config": {**t_slow["config"], "port": fast_port}})
        ev = HealthEvaluator()
        pipe = Pipeline(LatencyRecorder(window, 2), ev, [PrometheusExporter()])
        pipe.add_target(p_slow)

        def run(p: Any) -> CheckStatus:
            return pipe.handle(run_probe(p, "dicom_echo")).check.status

        assert run(p_slow) == CheckStatus.WARN  # p95 250 ms over 150 ms
        assert ev.targets["lat"].state == HealthState.DEGRADED
        t0 = time.monotonic()
        assert run(p_fast) == CheckStatus.WARN  # the slow run is still in the window
        # fast runs only, until the slow one has left the window: bounded by window + slack
        statuses = []
        while time.monotonic() - t0 < window + 1.0:
            statuses.append(run(p_fast))
            if statuses[-1] == CheckStatus.PASS:
                break
            time.sleep(0.1)  # the probing interval here, not synchronisation
    assert statuses[-1] == CheckStatus.PASS, statuses
    assert time.monotonic() - t0 >= window / 2 - 0.05  # not before its sub-window expired
    assert ev.targets["lat"].state == HealthState.HEALTHY
