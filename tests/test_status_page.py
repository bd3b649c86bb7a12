"""The status page at GET /, read by a real headless Chromium (Debian's `chromium` package).

The agent probes a healthy simulated PACS and a target whose DICOM port refuses connections (its
name full of HTML), the rendered DOM must show both states,
the plain-words reason, worst first; the page holds no script at all (headless Chromium's
--dump-dom and --screenshot themselves need JavaScript, so it stays on in the browser) and nothing
may load from elsewhere; a screenshot of the page at
tablet width is kept in the test's tmp dir (PACS_STATUS_SCREENSHOT=path copies it there too, as
used for docs/img/status-page.png). Chromium missing is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import httpx
import pytest

from agent.evaluator import CheckState, CheckStatus, HealthState, TargetState, Thresholds
from agent.simulator import SimulatedPACS
from agent.status_page import order, render, sparkline
from agent.web_config import load_web_config
from probes.base import ProbeResult, Reason
from tests.helpers import wait_until
from tests.helpers.agent_fixtures import base_url, running_agent
from tests.helpers.ports import held_refused_port

HOSTILE = "<script>alert(\"x\")</script> & <b>PACS</b> 'quoted'"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, (
        "chromium is missing: run scripts/install-system-deps.sh (apt-get install chromium)"
    )
    return path


def browse(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{len(list(tmp.iterdir()))}"
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_render_escapes_and_orders_worst_first() -> None:
    now = datetime.now(UTC)
    ok = TargetState("a-ok", "A healthy", Thresholds(), state=HealthState.HEALTHY)
    ok.checks = {
        "dicom_echo": CheckState(
            "dicom_echo",
            last=ProbeResult("a-ok", "dicom_echo", True, None, "Echo successful", {}, 0.01, now),
            p95=0.012,
        )
    }
    bad = TargetState("z-bad", HOSTILE, Thresholds(), state=HealthState.UNHEALTHY)
    bad.checks = {
        "dicom_echo": CheckState(
            "dicom_echo",
            status=CheckStatus.FAIL,
            message="connection refused <img src=x>",
            last=ProbeResult("z-bad", "dicom_echo", False, Reason.REFUSED, "refused", {}, 0.0, now),
        )
    }
    maint = TargetState("m-bad", "In maintenance", Thresholds(), state=HealthState.UNHEALTHY)
    maint.maintenance = True
    assert [t.id for t in order([ok, maint, bad])] == ["z-bad", "a-ok", "m-bad"]

    html = render([ok, maint, bad], lambda t, p: [0.01, None, 0.02, 0.015, 0.03], now=now).decode()
    assert "<script" not in html.lower() and "<img" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;img src=x&gt;" in html
    assert html.index("z-bad") < html.index("a-ok") < html.index("m-bad")
    assert "Connection refused" in html and "MAINTENANCE" in html
    assert '<meta http-equiv="refresh"' in html and 'name="viewport"' in html
    # nothing from elsewhere: no absolute URLs in src/href
    assert not re.search(r"(src|href)=\"?(https?:)?//", html)
    assert "<polyline" in html
    assert "no runs yet" in sparkline([None, None])


def test_status_page_in_headless_chromium(tmp_path: Path) -> None:
    chromium()  # fail at once, before starting anything, if the browser is missing
    dead_port = held_refused_port()
    with SimulatedPACS() as sim:
        healthy = sim.endpoint_config("pacs-ok", interval_ms=1000)
        broken = {
            "id": "pacs-down",
            "name": HOSTILE,
            "config": {"host": "127.0.0.1", "port": dead_port, "calledAET": "X"},
            "healthCheck": {"interval": 1000, "timeout": 800, "failureThreshold": 1},
            "probes": {"dicom_find": {"enabled": False}},
        }
        agent = {"selfProbe": {"enabled": False}, "latencyWindow": 5000, "latencyWindowBuckets": 5}
        with running_agent([broken, healthy], agent) as svc:

            def ready() -> bool:
                ts = {t.id: t for t in svc.evaluator.snapshot()}
                hist = [v for v in svc.recorder.history("pacs-ok", "dicom_echo") if v is not None]
                return (
                    ts["pacs-down"].state == HealthState.UNHEALTHY
                    and ts["pacs-ok"].state == HealthState.HEALTHY
                    and len(hist) >= 2
                )

            wait_until(ready, 30, what="one target UNHEALTHY, one HEALTHY with latency history")
            url = base_url(svc) + "/"
            raw = httpx.get(url, timeout=5)
            assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/html")
            assert "<script" not in raw.text.lower()  # works with JavaScript off
            assert not re.search(r"\son[a-z]+=", raw.text)  # no inline event handlers either

            dom = browse(url, tmp_path, "--dump-dom")
            assert dom.returncode == 0, dom.stderr[-2000:]
            page = dom.stdout
            shot = tmp_path / "status-page.png"
            snap = browse(url, tmp_path, f"--screenshot={shot}", "--window-size=820,1000")
            assert snap.returncode == 0, snap.stderr[-2000:]

    # the browser's DOM: states, plain reasons, worst first, the hostile name as text
    assert "UNHEALTHY" in page and "HEALTHY" in page
    assert "Connection refused: nothing is listening on that port" in page
    assert page.index("pacs-down") < page.index("pacs-ok")
    assert "&lt;script&gt;alert" in page and "<script>alert" not in page
    assert "<svg" in page and "<polyline" in page
    assert re.search(r"Echo successful", page)
    # a real PNG of the page, kept with the test's files (and for the README if asked)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
    if os.environ.get("PACS_STATUS_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["PACS_STATUS_SCREENSHOT"])


def test_status_page_needs_the_same_auth_as_metrics(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"pager-pass", bcrypt.gensalt(rounds=4)).decode()
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  oncall: {hashed}\n")
    with SimulatedPACS() as sim:
        with running_agent(
            [sim.endpoint_config("pacs-ok", interval_ms=1000)],
            {"selfProbe": {"enabled": False}},
            web=load_web_config(str(web)),
        ) as svc:
            url = base_url(svc) + "/"
            assert httpx.get(url, timeout=5).status_code == 401
            assert httpx.get(base_url(svc) + "/metrics", timeout=5).status_code == 401
            r = httpx.get(url, auth=("oncall", "pager-pass"), timeout=5)
            assert r.status_code == 200 and "pacs-ok" in r.text


@pytest.mark.parametrize("path", ["/", "/?x=1"])
def test_status_page_is_not_the_old_index(path: str) -> None:
    with SimulatedPACS() as sim:
        with running_agent(
            [sim.endpoint_config("pacs-ok", interval_ms=1000)], {"selfProbe": {"enabled": False}}
        ) as svc:
            html = httpx.get(base_url(svc) + path, timeout=5).text
    assert "pacs-ok" in html and 'http-equiv="refresh"' in html
