"""agent run's process tuning: the 1 ms GIL switch interval replaces Python's default only."""

from __future__ import annotations

import sys

from agent.tuning import PYTHON_DEFAULT_SWITCH_INTERVAL, SWITCH_INTERVAL, tune_daemon_process


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
