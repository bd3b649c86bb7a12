"""1,000 failed runs leave no threads, file descriptors or memory behind.

The faulty peers run in a separate process (`python -m tests.helpers.hostile_peers`), so what is
counted here (/proc/self/task, /proc/self/fd, VmRSS) is the agent's own: run_probe and the probes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runner import run_probe
from agent.targets import TargetPlan
from probes.base import Reason
from tests.helpers.config import plan, target
from tests.helpers.peers import wait_until
from tests.helpers.ports import refused_port

ROOT = Path(__file__).resolve().parents[1]
RUNS = 1000
# (peer mode, probe, expected reason); "refused" has no peer at all
MIX = [
    ("refused", "dicom_echo", Reason.REFUSED),
    ("reject", "dicom_echo", Reason.REJECTED),
    ("abort", "dicom_echo", Reason.ABORTED),
    ("close_mid_dimse", "dicom_echo", Reason.ABORTED),
    ("http_500", "api_ping", Reason.HTTP_STATUS),
]
THREAD_SLACK = 2
FD_SLACK = 4
# A leak is growth that goes on: RSS after a second batch of runs against RSS after the first
# (allocator pools and caches have settled by then). 1 MiB over 500 runs is ~2 KB a run.
RSS_GROWTH_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def peers() -> Iterator[dict[str, int]]:
    modes = [m for m, _, _ in MIX if m != "refused"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.hostile_peers", *modes],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        ports = json.loads(proc.stdout.readline())
        with refused_port() as refused:  # bound, not listening: held for the whole module
            ports["refused"] = refused
            yield ports
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def plans_for(ports: dict[str, int]) -> list[tuple[TargetPlan, str, Reason]]:
    out = []
    for mode, probe, reason in MIX:
        url = f"http://127.0.0.1:{ports[mode]}"
        t = target(
            mode,
            port=ports[mode],
            only=(probe,),
            timeout_ms=1000,
            sectra={"apiEndpoint": url} if probe == "api_ping" else None,
        )
        out.append((plan(t), probe, reason))
    return out


def threads() -> tuple[int, int]:
    return threading.active_count(), len(os.listdir("/proc/self/task"))


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_thousand_failures_leak_nothing(peers: dict[str, int]) -> None:
    mix = plans_for(peers)
    # warm up: lazily created pools (the resolver's), caches (TLS contexts), imports
    for _ in range(20):
        for p, probe, _ in mix:
            run_probe(p, probe)
    t_base, task_base = threads()
    fd_base = fds()

    reasons: dict[str, int] = {}
    rss_after: list[int] = []
    t0 = time.monotonic()
    for _batch in range(2):
        for i in range(RUNS // 2):
            p, probe, want = mix[i % len(mix)]
            r = run_probe(p, probe)
            assert not r.ok and r.reason == want, (p.id, r.reason, r.message)
            reasons[r.reason.value] = reasons.get(r.reason.value, 0) + 1
        rss_after.append(rss())
    took = time.monotonic() - t0

    # Threads that end on their own (an HTTP run's cancelled watchdog timer) get a moment.
    wait_until(
        lambda: threads()[0] <= t_base + THREAD_SLACK and threads()[1] <= task_base + THREAD_SLACK,
        5,
    )
    wait_until(lambda: fds() <= fd_base + FD_SLACK, 5)
    grown = rss_after[1] - rss_after[0]
    assert grown < RSS_GROWTH_LIMIT, (
        f"RSS grew by {grown / 1e6:.2f} MB over the second {RUNS // 2} failed runs"
    )
    assert sum(reasons.values()) == RUNS and "error" not in reasons, reasons
    assert took < 60, took  # fast-failing faults fail fast
