"""Waiting without holding an OS thread: the probe loop, and the waits every probe goes through.

A probe's code is written as plain blocking calls (connect, send, wait for the reply). Run on an
OS thread of its own, each wait below blocks that thread, as any socket call would. Run inside a
`ProbeLoop`, the same wait parks the run (a greenlet) and the loop's one thread goes on with other
runs, waking it when its socket is ready, its sleep is over or its deadline has passed.

Why: at 5,000 targets the agent starts 500 runs a second. With a thread per run, each run cost
six or more thread switches and GIL hand-overs (the timer's wake-up, the worker's, one per reply)
on top of its own work, about twice the work itself (BENCHMARKS.md "Late night"). On the loop a
run is greenlet switches on one thread and one epoll wait per reply, shared by every run whose
reply is in.

Why greenlet rather than asyncio: every probe, the DICOM association, the TLS handshake and the
HTTP reader would have had to become coroutines, with an async twin for `probe --once` and the
HTTP endpoints, which run one probe on their own thread. With greenlet the same code serves both;
only the waits below know which one they are in. (gevent is greenlet plus monkey-patching of the
whole process, grpc and the HTTP server included: more than the probes need.)

Every socket a probe uses is non-blocking; the waits are the only place a run can pause. Nothing
a run does between waits may block for long: a blocking call stalls every run on the loop.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import select
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from greenlet import GreenletExit, getcurrent, greenlet

log = logging.getLogger("probes.loop")

T = TypeVar("T")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

_local = threading.local()


class _Wait:
    """One parked run: woken once, by its event or by its deadline, whichever comes first."""

    __slots__ = ("run", "live", "fd")

    def __init__(self, run: greenlet) -> None:
        self.run = run
        self.live = True
        self.fd = -1


class ProbeLoop:
    """Runs probe runs as greenlets on the thread that calls run().

    `tick` is called on every turn of the loop, on the loop's thread; it may start runs (spawn)
    and returns how long the loop may sleep before it wants to be called again (None: until
    something wakes it). Other threads reach the loop only through wake(), call_soon() and stop().
    """

    def __init__(self, tick: Callable[[], float | None]) -> None:
        self._tick = tick
        self._sel = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, _Wait]] = []
        self._seq = itertools.count()
        self._ready: deque[tuple[greenlet, tuple[Any, ...]]] = deque()
        self._calls: deque[Callable[[], None]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, READ, None)
        self._hub: greenlet | None = None
        self._stopped = False
        self.thread: threading.Thread | None = None

    # -- from any thread -------------------------------------------------------------------------

    def wake(self) -> None:
        """Make the loop turn (and call tick) now."""
        try:
            self._wake_w.send(b"\0")
        except OSError:  # BlockingIOError: a wake-up is pending already; or closed at stop
            pass

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Call fn on the loop's thread on its next turn."""
        self._calls.append(fn)
        self.wake()

    def stop(self) -> None:
        """End run(); runs still parked are ended (GreenletExit) so that their cleanup runs."""
        self._stopped = True
        self.wake()

    def start(self, name: str = "probe-loop") -> None:
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)
        self.thread.start()

    # -- on the loop's thread --------------------------------------------------------------------

    def spawn(self, fn: Callable[..., None], *args: Any) -> None:
        """Start fn(*args) as a run on this loop (from tick or from a run)."""
        assert self._hub is not None, "spawn() before run()"
        self._ready.append((greenlet(_guarded(fn), parent=self._hub), args))

    def run(self) -> None:
        """The loop's own thread (start()): turn until stop(), then end the runs still parked
        and close."""
        try:
            self.run_until(lambda: False)
        finally:
            self._end_parked()
            self.close()

    def _end_parked(self) -> None:
        """GreenletExit into every parked run, so that its cleanup (closing its socket, giving
        back its connection token) runs now, on this thread, rather than never: a suspended
        greenlet whose thread has ended is freed without running its finally blocks."""
        self._hub = getcurrent()
        _local.loop = self
        parked = [w.run for _, _, w in self._timers if w.live]
        self._timers.clear()
        self._ready.clear()
        try:
            for run in parked:
                try:
                    if not run.dead:
                        run.throw(GreenletExit)  # a cleanup that parks again is left there
                except Exception:  # noqa: BLE001 - stopping goes on
                    log.exception("a parked run failed while ending")
        finally:
            _local.loop = None

    def run_until(self, done: Callable[[], bool]) -> None:
        """Turn on the calling thread until done() (checked on every turn) or stop()."""
        self._hub = getcurrent()
        _local.loop = self
        try:
            while not self._stopped and not done():
                delay = self._tick()
                self._switch_ready()
                timeout = self._expire_timers(delay)
                if self._ready:
                    timeout = 0.0
                for key, _ in self._sel.select(timeout):
                    w = key.data
                    if w is None:
                        self._drain_wake()
                    elif w.live:
                        self._resume(w, True)
                self._switch_ready()
        finally:
            _local.loop = None

    def close(self) -> None:
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()

    def _switch_ready(self) -> None:
        ready = self._ready
        while ready:
            run, args = ready.popleft()
            run.switch(*args)

    def _expire_timers(self, delay: float | None) -> float | None:
        """Wake the runs whose deadline has passed; how long select() may then wait."""
        timers = self._timers
        now = time.monotonic()
        while timers:
            at, _, w = timers[0]
            if not w.live:  # woken by its event already
                heapq.heappop(timers)
            elif at <= now:
                heapq.heappop(timers)
                self._resume(w, False)
            else:
                left = at - now
                return left if delay is None else min(delay, left)
        return delay

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:  # BlockingIOError: drained
            pass
        calls = self._calls
        while calls:
            calls.popleft()()

    def _resume(self, w: _Wait, value: bool) -> None:
        w.live = False
        if w.fd >= 0:
            self._sel.unregister(w.fd)
        self._ready.append((w.run, (value,)))

    def _park(self, w: _Wait, timeout: float, fd: int = -1, events: int = 0) -> bool:
        """Park the calling run (`w`); True when its event (or wake) came, False at the
        timeout."""
        assert self._hub is not None
        if fd >= 0:
            self._sel.register(fd, events, w)
            w.fd = fd
        heapq.heappush(self._timers, (time.monotonic() + max(timeout, 0.0), next(self._seq), w))
        return bool(self._hub.switch())

    def wait_fd(self, fd: int, events: int, timeout: float) -> bool:
        return self._park(_Wait(getcurrent()), timeout, fd, events)

    def sleep(self, seconds: float) -> None:
        self._park(_Wait(getcurrent()), seconds)

    def wait_future(self, fut: Future[T], timeout: float) -> bool:
        w = _Wait(getcurrent())

        def resume() -> None:
            if w.live:
                self._resume(w, True)

        # on the thread that completes it (or here, at once, if done already): the run is
        # resumed on the loop's next turn
        fut.add_done_callback(lambda _: self.call_soon(resume))
        return self._park(w, timeout) or fut.done()


def _guarded(fn: Callable[..., None]) -> Callable[..., None]:
    def run(*args: Any) -> None:
        try:
            fn(*args)
        except Exception:  # noqa: BLE001 - one run's bug must not end the loop
            log.exception("a run on the probe loop failed")

    return run


def current_loop() -> ProbeLoop | None:
    """The loop the caller runs on, or None on a thread of its own (or in the loop itself)."""
    loop: ProbeLoop | None = getattr(_local, "loop", None)
    if loop is None or getcurrent() is loop._hub:
        return None
    return loop


# -- the waits -----------------------------------------------------------------------------------


def wait_fd(sock: socket.socket, events: int, timeout: float) -> bool:
    """Until the socket is readable (READ) or writable (WRITE); False when `timeout` passed."""
    fd = sock.fileno()
    if fd < 0:  # closed under us (a watchdog): the next call on it reports that
        return True
    loop = current_loop()
    if loop is not None:
        return loop.wait_fd(fd, events, timeout)
    poller = select.poll()
    mask = (select.POLLIN if events & READ else 0) | (select.POLLOUT if events & WRITE else 0)
    poller.register(fd, mask)
    return bool(poller.poll(max(timeout, 0.0) * 1000))


def sleep(seconds: float, stop: threading.Event | None = None) -> bool:
    """Pause; True if `stop` was set (a thread's wait ends early then; a loop's run does not)."""
    loop = current_loop()
    if loop is not None:
        loop.sleep(seconds)
        return stop is not None and stop.is_set()
    if stop is not None:
        return stop.wait(seconds)
    time.sleep(seconds)
    return False


def result(fut: Future[T], timeout: float) -> T:
    """fut.result(timeout) that parks a run instead of its thread; TimeoutError when late."""
    loop = current_loop()
    if loop is not None and not fut.done():
        loop.wait_future(fut, timeout)
        if not fut.done():
            raise TimeoutError
    return fut.result(timeout=timeout)


__all__ = ["READ", "WRITE", "ProbeLoop", "current_loop", "result", "sleep", "wait_fd"]
