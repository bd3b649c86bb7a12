"""One shared timer thread for deadline watchdogs (instead of a threading.Timer per run).

A threading.Timer starts an OS thread per HTTP run only to cancel it almost always: at 500 runs
a second that was a thread start, two GIL hand-overs and an Event per run. Here every watchdog
is an entry in one heap; the thread sleeps until the earliest one and calls it when it is due.
Callbacks run on the watchdog thread, must be quick and must not raise.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable


class Watch:
    """A pending watchdog; cancel() makes it a no-op (its heap entry is dropped when due)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn: Callable[[], None] | None = fn

    def cancel(self) -> None:
        self.fn = None


class Watchdog:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def after(self, seconds: float, fn: Callable[[], None]) -> Watch:
        """Call fn in `seconds` unless the returned Watch is cancelled first."""
        w = Watch(fn)
        at = self._clock() + seconds
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="watchdog", daemon=True)
                self._thread.start()
            heapq.heappush(self._heap, (at, next(self._seq), w))
            if self._heap[0][2] is w:
                self._cond.notify()  # earlier than what the thread sleeps for
        return w

    def _loop(self) -> None:
        with self._cond:
            while True:
                # cancelled entries at the top are dropped without waiting for them
                while self._heap and self._heap[0][2].fn is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                at = self._heap[0][0]
                left = at - self._clock()
                if left > 0:
                    self._cond.wait(left)
                    continue
                fn = heapq.heappop(self._heap)[2].fn
                if fn is None:
                    continue
                self._cond.release()
                try:
                    fn()
                except Exception:  # noqa: BLE001 - a watchdog must outlive a bad callback
                    pass
                finally:
                    self._cond.acquire()


WATCHDOG = Watchdog()
