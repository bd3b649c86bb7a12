"""agent run's process tuning: the 1 ms GIL switch interval replaces Python's default only; the
threads share one malloc arena unless MALLOC_ARENA_MAX says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.tuning import PYTHON_DEFAULT_SWITCH_INTERVAL, SWITCH_INTERVAL, tune_daemon_process

ROOT = Path(__file__).resolve().parents[1]


def test_switch_interval_default_is_tuned_and_an_explicit_one_kept() -> None:
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(PYTHON_DEFAULT_SWITCH_INTERVAL)
        tune_daemon_process()
        assert sys.getswitchinterval() == SWITCH_INTERVAL
        # bench/scale --switch-interval starts the agent with its own value: it must stay
        sys.setswitchinterval(0.004)
        tune_daemon_process()
        assert sys.getswitchinterval() == 0.004
    finally:
        sys.setswitchinterval(before)


# 32 threads alive at once, each holding a malloc'd buffer (over pymalloc's 512 bytes), then
# glibc's own per-arena report (malloc_stats prints "Arena N:" per arena to stderr).
ARENAS = r"""
import ctypes, sys, threading
from agent.tuning import tune_daemon_process
if sys.argv[1] == "tuned":
    tune_daemon_process()
held, gate = [], threading.Barrier(32)
def work():
    held.append(bytearray(8192))
    gate.wait(timeout=30)
threads = [threading.Thread(target=work) for _ in range(32)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=30)
sys.stderr.flush()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def _arenas(mode: str, **env: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", ARENAS, mode],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **env},
    )
    assert run.returncode == 0, run.stderr
    return sum(1 for line in run.stderr.splitlines() if line.startswith("Arena "))


def test_daemon_threads_share_one_malloc_arena_unless_the_environment_says() -> None:
    assert _arenas("untuned") > 1  # the control: glibc gives concurrent threads their own
    assert _arenas("tuned") == 1
    assert 1 < _arenas("tuned", MALLOC_ARENA_MAX="4") <= 4  # the operator's setting stays


def test_the_running_agent_gives_freed_heap_back_periodically(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import agent.service
    from tests.helpers.agent_fixtures import running_agent

    calls = threading.Semaphore(0)
    monkeypatch.setattr(agent.service, "HEAP_RELEASE_EVERY", 0.2)
    monkeypatch.setattr(agent.service, "release_free_heap", calls.release)
    target = {"id": "t", "config": {"host": "127.0.0.1", "port": 9}}
    with running_agent([target]):
        # the first after start, then again on the job's interval (not only at install)
        assert all(calls.acquire(timeout=10) for _ in range(4))
