"""The shared deadline watchdog calls what is due, in order, and never what was cancelled."""

from __future__ import annotations

import threading

from probes.watchdog import Watchdog
from tests.helpers.peers import wait_until


def test_due_callbacks_run_in_order_and_cancelled_ones_never() -> None:
    dog = Watchdog()
    fired: list[str] = []
    done = threading.Event()
    dog.after(0.2, lambda: (fired.append("late"), done.set()))
    cancelled = dog.after(0.05, lambda: fired.append("cancelled"))
    dog.after(0.1, lambda: fired.append("early"))
    cancelled.cancel()
    assert done.wait(5)
    assert fired == ["early", "late"]


def test_an_earlier_watch_wakes_a_sleeping_thread() -> None:
    dog = Watchdog()
    fired: list[str] = []
    dog.after(60, lambda: fired.append("far"))
    dog.after(0.05, lambda: fired.append("near"))
    wait_until(lambda: fired == ["near"], 5)


def test_a_raising_callback_does_not_stop_the_thread() -> None:
    dog = Watchdog()
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("bad callback")

    dog.after(0.01, boom)
    dog.after(0.05, lambda: fired.append("after"))
    wait_until(lambda: fired == ["after"], 5)
