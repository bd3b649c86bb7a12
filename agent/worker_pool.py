"""The worker processes of `agent run --workers N`: start, watch, restart with backoff, signal,
stop; and the HTTP client that talks to each over its private unix socket.

Each worker runs agent.worker answering on RUNDIR/worker-J.sock, where RUNDIR is a fresh 0700
directory: only this user reaches the workers, and nothing listens on a TCP port besides the
agent's one public port.

At start the workers are forked from the supervisor, which has imported everything and loaded the
config already and runs no thread yet: N interpreters importing the agent at once took 3.5 times
as long to start on a loaded 2-core machine. A restart comes later, when the supervisor has
threads (HTTP, this module's) and a fork could copy a lock another thread holds: it execs
`python -m agent.worker` instead. Either way the worker's stdin is a pipe from the supervisor whose
end of file tells it the supervisor is gone.
"""

from __future__ import annotations

import http.client
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("agent.workers")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_S = 60.0  # a worker that ran this long before it died starts again after BACKOFF_FIRST_S
POLL_S = 0.2  # how often the supervising thread looks at the workers (exits, readiness)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self._path)
        except OSError:
            s.close()
            raise
        self.sock = s


def unix_request(path: str, method: str, url: str, timeout: float) -> tuple[int, bytes] | None:
    """(status, body) of one request to a worker's socket, or None if it did not answer."""
    conn = _UnixConnection(path, timeout)
    try:
        conn.request(method, url, headers={"Content-Length": "0"} if method == "POST" else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class ForkedProcess:
    """The part of subprocess.Popen this module uses, for a child made with os.fork()."""

    def __init__(self, pid: int, stdin_fd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = os.fdopen(stdin_fd, "wb", buffering=0)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.02)  # a bounded wait for a child's exit; no other event to wait on
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


@dataclass
class Worker:
    index: int
    socket: str
    proc: subprocess.Popen[bytes] | ForkedProcess | None = None
    started: float = 0.0
    ready: bool = False
    restarts: int = 0
    backoff: float = BACKOFF_FIRST_S
    restart_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class WorkerPool:
    def __init__(
        self,
        count: int,
        command: Callable[[Worker], list[str]],
        rundir: Path,
        on_restart: Callable[[int], None] = lambda _: None,
        forked: Callable[[Worker], int] | None = None,
    ) -> None:
        """`command`: a worker's argv for exec; `forked`: what a forked child runs instead (its
        exit status), None to always exec."""
        self.workers = [Worker(j, str(rundir / f"worker-{j}.sock")) for j in range(count)]
        self._command = command
        self._forked = forked
        self._on_restart = on_restart
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(2, 2 * count), thread_name_prefix="fan")

    # -- processes -------------------------------------------------------------------------------

    def _spawn(self, w: Worker) -> None:
        try:
            os.unlink(w.socket)  # a crashed worker's socket file
        except FileNotFoundError:
            pass
        w.ready = False
        w.started = time.monotonic()
        w.restart_at = None
        if self._forked is not None and threading.active_count() == 1:
            w.proc = self._fork(w, self._forked)
            return
        # stdin: a pipe the worker reads to its end, which comes when this process is gone
        # stdout: the agent's stdout carries only its "Listening on" line; workers log to stderr
        w.proc = subprocess.Popen(
            self._command(w), stdin=subprocess.PIPE, stdout=sys.stderr.fileno(), close_fds=True
        )

    def _fork(self, w: Worker, run: Callable[[Worker], int]) -> ForkedProcess:
        r, wr = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                os.close(wr)
                for other in self.workers:  # other workers' pipes: their EOF is not ours to hold
                    if isinstance(other.proc, ForkedProcess):
                        os.close(other.proc.stdin.fileno())
                os.dup2(r, 0)
                os.close(r)
                os.dup2(2, 1)  # stdout is the supervisor's "Listening on" line only
                code = run(w)
            finally:
                os._exit(code)
        os.close(r)
        return ForkedProcess(pid, wr)

    def _check_ready(self, w: Worker) -> None:
        if w.alive() and not w.ready:
            got = unix_request(w.socket, "GET", "/-/ready", timeout=5.0)
            w.ready = got is not None and got[0] == 200

    def start(self, timeout: float) -> str | None:
        """Start every worker and wait for all to be ready; None, or what went wrong."""
        for w in self.workers:
            self._spawn(w)
        end = time.monotonic() + timeout
        while not all(w.ready for w in self.workers):
            for w in self.workers:
                if not w.alive():
                    code = w.proc.returncode if w.proc is not None else None
                    return f"worker {w.index} exited with status {code} while starting"
                self._check_ready(w)
            if time.monotonic() > end:
                return f"workers not ready within {timeout:.0f} s"
            if self._stopping.wait(0.05):
                return "stopped while starting"
        self._thread = threading.Thread(target=self._supervise, name="workers", daemon=True)
        self._thread.start()
        return None

    def cancel_start(self) -> None:
        """Stop waiting in start() (from a signal handler: sets an event, nothing more)."""
        self._stopping.set()

    def _supervise(self) -> None:
        while not self._stopping.wait(POLL_S):
            now = time.monotonic()
            for w in self.workers:
                with w.lock:
                    if self._stopping.is_set():
                        return
                    if w.alive():
                        self._check_ready(w)
                        continue
                    if w.restart_at is None:
                        ran = now - w.started
                        # doubling while it keeps dying young; from the start once it ran
                        if w.restarts and ran < STABLE_S:
                            w.backoff = min(w.backoff * 2, BACKOFF_MAX_S)
                        else:
                            w.backoff = BACKOFF_FIRST_S
                        w.restarts += 1
                        w.ready = False
                        w.restart_at = now + w.backoff
                        self._on_restart(w.index)
                        rc = w.proc.returncode if w.proc is not None else None
                        log.error(
                            "worker %d (pid %s) exited with status %s after %.0f s; "
                            "restarting it in %.0f s",
                            w.index,
                            w.proc.pid if w.proc is not None else "-",
                            rc,
                            ran,
                            w.backoff,
                        )
                    elif now >= w.restart_at:
                        self._spawn(w)
                        log.info("worker %d restarted (pid %d)", w.index, w.proc.pid)  # type: ignore[union-attr]

    def signal_all(self, sig: int) -> None:
        for w in self.workers:
            if w.alive():
                try:
                    w.proc.send_signal(sig)  # type: ignore[union-attr]
                except ProcessLookupError:
                    pass

    def stop(self, timeout: float) -> None:
        """SIGTERM to every worker, SIGKILL to those still running after `timeout`."""
        self._stopping.set()
        for w in self.workers:
            w.lock.acquire()  # no restart from here on
        self.signal_all(signal.SIGTERM)
        end = time.monotonic() + timeout
        for w in self.workers:
            if w.proc is None:
                continue
            try:
                w.proc.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop within %.0f s: killed", w.index, timeout)
                w.proc.kill()
                w.proc.wait(5)
            if w.proc.stdin is not None:
                w.proc.stdin.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- requests --------------------------------------------------------------------------------

    def request(self, w: Worker, method: str, url: str, timeout: float) -> tuple[int, bytes] | None:
        if not w.alive():
            return None
        return unix_request(w.socket, method, url, timeout)

    def fan_out(self, method: str, url: str, timeout: float) -> list[tuple[int, bytes] | None]:
        """The same request to every worker at once; None where one did not answer."""
        futures = [self._pool.submit(self.request, w, method, url, timeout) for w in self.workers]
        return [f.result() for f in futures]


__all__ = ["Worker", "WorkerPool", "unix_request"]
