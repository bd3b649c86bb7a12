"""`agent run` as a real process: SIGTERM with a probe in flight, SIGHUP and POST /-/reload.

The daemon owns the process, so these run `python -m agent run` in a subprocess against peers on
127.0.0.1 and look at it from outside: exit code and time, /metrics, /health, its log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.scheduler import jitter_fraction
from tests.helpers import hostile_peers as hp
from tests.helpers.daemon import start_agent
from tests.helpers.peers import echo_scp, wait_until

# wall-clock bounds throughout: deselect with -m 'not timing' on a loaded host
pytestmark = pytest.mark.timing

ROOT = Path(__file__).resolve().parents[1]


def early_id(prefix: str, interval: float, within: float, probe: str = "dicom_echo") -> str:
    """A target id whose first run is scheduled within `within` s of start (stable jitter)."""
    for i in range(10_000):
        tid = f"{prefix}-{i}"
        if jitter_fraction(f"{tid}|{probe}") * interval < within:
            return tid
    raise AssertionError("no early target id found")


def echo_target(tid: str, port: int, *, interval_ms: int, timeout_ms: int) -> dict[str, Any]:
    return {
        "id": tid,
        "config": {"host": "127.0.0.1", "port": port, "calledAET": "SECTRA_PACS"},
        "healthCheck": {"interval": interval_ms, "timeout": timeout_ms},
        "probes": {"dicom_find": {"enabled": False}},
    }


def write_config(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.replace(tmp, path)  # the agent never reads a half-written file


@contextmanager
def daemon(config: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    log = config.with_suffix(".log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with log.open("w") as err:
        # the agent binds port 0 and prints its URL: no released port to race for
        p, url = start_agent(["--config", str(config), *extra], stderr=err, env=env, cwd=ROOT)
        try:
            yield p, url, log
        finally:
            if p.poll() is None:
                p.kill()
            p.wait(10)


# One client for the whole module: httpx.get() builds a new client (and TLS context) per call,
# which on a loaded machine takes longer than the windows these tests look at.
_client = httpx.Client(timeout=2)


def get(url: str) -> httpx.Response | None:
    try:
        return _client.get(url)
    except httpx.HTTPError:
        return None


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = get(url + "/metrics")
    if r is None or r.status_code != 200:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(r.text)
        for s in fam.samples
    }


def value(m: dict, name: str, **labels: str) -> float | None:
    return m.get((name, tuple(sorted(labels.items()))))


def runs(m: dict, target: str) -> float:
    return sum(
        value(m, "pacs_probe_runs_total", target=target, probe="dicom_echo", result=r) or 0
        for r in ("success", "failure")
    )


def targets_in(m: dict) -> set[str]:
    return {dict(ls)["target"] for (n, ls) in m if n == "pacs_target_health"}


def health(url: str) -> dict[str, Any]:
    r = get(url + "/health")
    assert r is not None, "/health did not answer"
    return r.json()


def reload(url: str) -> httpx.Response:
    return _client.post(url + "/-/reload", timeout=10)


# -- SIGTERM ---------------------------------------------------------------------------------------


def test_sigterm_stops_within_5_s_and_cancels_the_probe_in_flight(tmp_path: Path) -> None:
    interval = 20.0
    tid = early_id("inflight", interval, within=0.5)
    with hp.ScriptServer(hp.read_never_answer) as pacs:
        cfg = tmp_path / "agent.json"
        write_config(
            cfg,
            {
                "targets": [echo_target(tid, pacs.port, interval_ms=20000, timeout_ms=20000)],
                "agent": {"selfProbe": {"enabled": False}},
            },
        )
        with daemon(cfg) as (p, url, log):
            # the probe has connected and sent its A-ASSOCIATE-RQ; the PACS will never answer
            wait_until(lambda: pacs.accepted >= 1, 15)
            wait_until(lambda: (r := get(url + "/-/ready")) is not None and r.status_code == 200, 5)
            # the probe is still waiting on its association (20 s deadline), connection open
            assert pacs.peer_closed == 0 and pacs.active() == 1
            t0 = time.monotonic()
            p.send_signal(signal.SIGTERM)
            code = p.wait(10)
            took = time.monotonic() - t0
            # Specific to this stop: the connection that was open a moment ago is closed now,
            # 15 s before the probe's own deadline could have closed it. (The agent ends it by
            # exiting, see agent.cli_common.leave: the kernel closes it; no A-ABORT is sent.)
            wait_until(lambda: pacs.peer_closed == 1 and pacs.active() == 0, 5)
            assert time.monotonic() - t0 < 5
        text = log.read_text()
    assert code == 0, text
    assert took < 5, f"SIGTERM took {took:.1f} s with a 20 s probe in flight"
    assert "agent stopped" in text
    assert "Traceback" not in text


# -- reload ----------------------------------------------------------------------------------------


def test_sighup_and_post_reload_swap_targets_atomically_and_reject_bad_configs(
    tmp_path: Path,
) -> None:
    interval_ms, timeout_ms = 400, 300
    kept = early_id("kept", interval_ms / 1000, within=0.2)
    removed = early_id("removed", interval_ms / 1000, within=0.2)
    added = early_id("added", interval_ms / 1000, within=0.2)
    with echo_scp() as scp:

        def t(tid: str) -> dict[str, Any]:
            return echo_target(tid, scp, interval_ms=interval_ms, timeout_ms=timeout_ms)

        agent = {"selfProbe": {"enabled": False}}
        cfg = tmp_path / "agent.json"
        write_config(cfg, {"targets": [t(kept), t(removed)], "agent": agent})
        with daemon(cfg) as (p, url, log):
            wait_until(
                lambda: runs(metrics(url), kept) >= 2 and runs(metrics(url), removed) >= 1, 15
            )
            assert health(url)["status"] == "HEALTHY"

            # 1. POST /-/reload, valid: `removed` goes, `added` comes. It answers once the new
            #    set is installed, and `kept` is still HEALTHY right then (not UNKNOWN until its
            #    next run: the swap is atomic for targets that stay).
            write_config(cfg, {"targets": [t(kept), t(added)], "agent": agent})
            r = reload(url)
            doc = health(url)
            assert r.status_code == 200, r.text
            states = {x["id"]: x["status"] for x in doc["targets"]}
            assert states.get(kept) == "HEALTHY", states
            assert set(states) == {kept, added}, states
            m = metrics(url)
            assert targets_in(m) == {kept, added}
            assert not any(dict(ls).get("target") == removed for (_, ls) in m)
            assert value(m, "pacs_config_last_reload_successful") == 1
            wait_until(lambda: runs(metrics(url), added) >= 1, 10)
            # a result of `removed` in flight across the reload does not bring it back
            assert removed not in targets_in(metrics(url))

            # 2. SIGHUP, invalid: rejected, logged, metric 0, the old targets keep running
            write_config(cfg, {"targets": [t(kept) | {"bogusKey": 1}], "agent": agent})
            p.send_signal(signal.SIGHUP)
            wait_until(lambda: value(metrics(url), "pacs_config_last_reload_successful") == 0, 10)
            before = metrics(url)
            wait_until(
                lambda: (
                    runs(metrics(url), kept) >= runs(before, kept) + 2
                    and runs(metrics(url), added) >= runs(before, added) + 2
                ),
                10,
            )
            assert targets_in(metrics(url)) == {kept, added}
            assert {x["id"] for x in health(url)["targets"]} == {kept, added}

            # 3. SIGHUP, valid: back to 1, `added` removed
            write_config(cfg, {"targets": [t(kept)], "agent": agent})
            p.send_signal(signal.SIGHUP)
            wait_until(lambda: targets_in(metrics(url)) == {kept}, 10)
            assert value(metrics(url), "pacs_config_last_reload_successful") == 1
            assert [x["id"] for x in health(url)["targets"]] == [kept]

            # 4. POST /-/reload, invalid (not even JSON): 400 with the reason, metric 0
            write_config(cfg, "{ this is not json")
            r = reload(url)
            assert r.status_code == 400 and "rejected" in r.text, r.text
            m = metrics(url)
            assert value(m, "pacs_config_last_reload_successful") == 0
            wait_until(lambda: runs(metrics(url), kept) >= runs(m, kept) + 2, 10)
            assert targets_in(metrics(url)) == {kept}
            assert p.poll() is None
            p.send_signal(signal.SIGTERM)
            assert p.wait(10) == 0
        text = log.read_text()
    assert text.count("config reload rejected") == 2, text
    assert "bogusKey" in text  # the log says what was wrong
    assert "Traceback" not in text
