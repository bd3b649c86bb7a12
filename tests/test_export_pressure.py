"""Pressure on the agent's own HTTP port must not disturb probing.

A scraper at 20 requests per second and 200 idle connections: a healthy target's runs keep their
interval, start lateness stays small, /health keeps answering. A flood beyond the connection cap
is turned away instead of costing a thread each.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from agent.service import AgentService
from tests.helpers import hostile_peers as hp
from tests.helpers.agent_fixtures import base_url, running_agent, sample, scrape
from tests.helpers.config import target
from tests.helpers.peers import wait_until

# wall-clock bounds throughout: deselect with -m 'not timing' on a loaded host
pytestmark = pytest.mark.timing

INTERVAL = 0.5


def runs(svc: AgentService) -> float:
    s = scrape(svc)
    return sum(
        sample(s, "pacs_probe_runs_total", target="healthy", probe="dicom_echo", result=r) or 0
        for r in ("success", "failure")
    )


@contextmanager
def healthy_agent() -> Iterator[AgentService]:
    # a plain socket SCP: it answers in microseconds even on a loaded machine
    with hp.ScriptServer(hp.echo_ok) as pacs:
        t = target(
            "healthy",
            port=pacs.port,
            only=("dicom_echo",),
            timeout_ms=int(INTERVAL * 1000),
            interval_ms=int(INTERVAL * 1000),
        )
        with running_agent([t], {"selfProbe": {"enabled": False}}) as svc:
            wait_until(lambda: runs(svc) >= 2, 10)
            yield svc


@contextmanager
def idle_connections(svc: AgentService, n: int) -> Iterator[list[socket.socket]]:
    """n TCP connections to the agent's port that never send a byte."""
    host, port = svc.address
    conns: list[socket.socket] = []
    try:
        for _ in range(n):
            conns.append(socket.create_connection((host, port), timeout=5))
        yield conns
    finally:
        for c in conns:
            c.close()


def test_fast_scraper_and_idle_connections_do_not_disturb_probing() -> None:
    with healthy_agent() as svc:
        url = base_url(svc)
        codes: list[int] = []
        slow: list[float] = []
        stop = threading.Event()

        def scraper() -> None:
            with httpx.Client(timeout=5) as c:
                while not stop.wait(0.05):  # 20 per second
                    t0 = time.monotonic()
                    codes.append(c.get(url + "/metrics").status_code)
                    slow.append(time.monotonic() - t0)

        before = scrape(svc)
        lat0 = sample(before, "pacs_scheduler_start_lateness_seconds_count") or 0
        late0 = sample(before, "pacs_scheduler_start_lateness_seconds_bucket", le="0.25") or 0
        with idle_connections(svc, 200):
            th = threading.Thread(target=scraper, daemon=True)
            r0, t0 = runs(svc), time.monotonic()
            th.start()
            health_codes = []
            while time.monotonic() - t0 < 3.0:
                health_codes.append(httpx.get(url + "/health", timeout=5).status_code)
                time.sleep(0.2)  # pacing the /health checks, not synchronisation
            stop.set()
            th.join(10)
            r1, t1 = runs(svc), time.monotonic()
            after = scrape(svc)
    expected = (t1 - t0) / INTERVAL
    assert r1 - r0 >= 0.7 * expected - 1, (r1 - r0, expected)
    assert (
        sample(
            after, "pacs_probe_runs_total", target="healthy", probe="dicom_echo", result="failure"
        )
        == 0
    )
    starts = (sample(after, "pacs_scheduler_start_lateness_seconds_count") or 0) - lat0
    on_time = (
        sample(after, "pacs_scheduler_start_lateness_seconds_bucket", le="0.25") or 0
    ) - late0
    assert starts >= 0.7 * expected - 1 and on_time >= 0.9 * starts, (on_time, starts)
    assert len(codes) >= 30 and set(codes) == {200}, (len(codes), set(codes))
    assert max(slow) < 2.0, max(slow)
    assert health_codes and set(health_codes) == {200}, health_codes


def _health_ok(svc: AgentService) -> bool:
    try:
        return httpx.get(base_url(svc) + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_connection_flood_is_capped_and_the_agent_recovers() -> None:
    with healthy_agent() as svc:
        cap = type(svc.server).max_connections
        base = threading.active_count()
        r0 = runs(svc)
        with idle_connections(svc, cap + 60) as conns:
            # the connections past the cap are closed by the agent at once
            def turned_away() -> int:
                n = 0
                for c in conns:
                    c.settimeout(0.001)
                    try:
                        if c.recv(1) == b"":
                            n += 1
                    except (TimeoutError, BlockingIOError):
                        pass
                    except OSError:
                        n += 1
                return n

            wait_until(lambda: turned_away() >= 50, 10, interval=0.1)
            assert threading.active_count() <= base + cap + 5
        # once the flood is gone the endpoints answer, and probing went on throughout
        wait_until(lambda: _health_ok(svc), 10)
        assert runs(svc) >= r0 + 2
